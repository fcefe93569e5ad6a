/* gzip.h - a gzip member (RFC 1952) of stored deflate blocks, written by our
 * own code so neither the extension nor the CLI links a compression library.
 *
 * The data is not compressed: stored blocks (RFC 1951, BTYPE 00) cost 5 bytes
 * per 64 KiB, and every gzip reader accepts them. Not async-signal-safe;
 * thread-safe (no shared state).
 */
#ifndef SPP_GZIP_H
#define SPP_GZIP_H

#include <stddef.h>
#include <stdint.h>

#include "out.h"

/* The CRC-32 of RFC 1952 (the one zlib's crc32() computes), continuing from
 * crc (0 to start). */
uint32_t spp_gzip_crc32(uint32_t crc, const unsigned char *data, size_t n);

/* Writes data as one complete gzip member to o (errors are sticky in o). */
void spp_gzip_write(spp_out *o, const unsigned char *data, size_t n);

#endif
