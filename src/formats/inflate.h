/* inflate.h - reading gzip files (RFC 1952) with a deflate (RFC 1951)
 * decoder of our own.
 *
 * spprof writes its pprof files as stored blocks (gzip.c), but a user may
 * have recompressed one with `gzip -9`, so reading needs real inflation. It
 * is written here rather than linked from zlib so the command stays a plain
 * C binary with no library to find at build or run time, and so the fuzz
 * target covers it with the rest of the readers; profiles are megabytes at
 * most, where a table-free decoder is fast enough. Input is hostile: every
 * code, length and distance is checked, the output is capped, and the CRC
 * and size in each member's trailer must match. Not async-signal-safe;
 * thread-safe.
 */
#ifndef SPP_INFLATE_H
#define SPP_INFLATE_H

#include <stddef.h>

/* Whether data starts like a gzip member. */
int spp_is_gzip(const unsigned char *data, size_t n);

/* Decompresses every member of a gzip file into *out (owned by the caller,
 * NUL-terminated, *outlen bytes without the NUL). Returns 0, SPP_ENOMEM,
 * or SPP_EINVAL with *why a static message (truncated, corrupt, more than
 * max_out bytes...). */
int spp_gunzip(const unsigned char *in, size_t n, size_t max_out, unsigned char **out,
               size_t *outlen, const char **why);

#endif
