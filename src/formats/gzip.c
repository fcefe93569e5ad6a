/* gzip.c - gzip framing around stored (uncompressed) deflate blocks. */
#include "gzip.h"

#define GZIP_BLOCK_MAX 65535u /* a stored block's LEN is 16 bits */

uint32_t spp_gzip_crc32(uint32_t crc, const unsigned char *data, size_t n)
{
    /* A table on the stack keeps this reentrant; building it costs 2048
     * shifts, nothing beside a profile's worth of bytes. */
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static void put_le32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

void spp_gzip_write(spp_out *o, const unsigned char *data, size_t n)
{
    /* ID1 ID2, CM = deflate, no flags, no mtime (the file's own time says
     * when), XFL 0, OS 3 (Unix). */
    static const unsigned char header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    spp_out_write(o, (const char *)header, sizeof(header));
    size_t off = 0;
    do {
        size_t len = n - off < GZIP_BLOCK_MAX ? n - off : GZIP_BLOCK_MAX;
        int final = off + len == n;
        /* BFINAL in bit 0, BTYPE 00 in bits 1-2, then padding to the byte
         * boundary; LEN and its one's complement NLEN, little-endian. */
        unsigned char bh[5] = {(unsigned char)final, (unsigned char)len, (unsigned char)(len >> 8),
                               (unsigned char)~len, (unsigned char)(~len >> 8)};
        spp_out_write(o, (const char *)bh, sizeof(bh));
        spp_out_write(o, (const char *)data + off, len);
        off += len;
    } while (off < n);
    unsigned char trailer[8];
    put_le32(trailer, spp_gzip_crc32(0, data, n));
    put_le32(trailer + 4, (uint32_t)n); /* ISIZE is the length modulo 2^32 */
    spp_out_write(o, (const char *)trailer, sizeof(trailer));
}
