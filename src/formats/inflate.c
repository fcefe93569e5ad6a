/* inflate.c - a deflate decoder (RFC 1951) and gzip framing (RFC 1952):
 * canonical Huffman codes decoded a bit at a time, no tables to build
 * beyond the code counts and sorted symbols. */
#include "inflate.h"

#include "../core/profile.h"
#include "gzip.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BITS 15
#define MAX_LITLEN 288
#define MAX_DIST 32

typedef struct inflater {
    const unsigned char *in;
    size_t n, pos;
    uint32_t bitbuf;
    int bitcnt;
    unsigned char *out;     /* owned until handed over */
    size_t len, cap, max;
    size_t member;          /* where the current member's output starts */
    const char *why;
    int nomem;
} inflater;

typedef struct huffman {
    uint16_t count[MAX_BITS + 1]; /* codes of each length */
    uint16_t sym[MAX_LITLEN];     /* symbols by code */
} huffman;

static int fail(inflater *z, const char *why)
{
    if (!z->why)
        z->why = why;
    return -1;
}

static int bits(inflater *z, int k, uint32_t *v)
{
    while (z->bitcnt < k) {
        if (z->pos >= z->n)
            return fail(z, "truncated (the compressed data ends early)");
        z->bitbuf |= (uint32_t)z->in[z->pos++] << z->bitcnt;
        z->bitcnt += 8;
    }
    *v = z->bitbuf & ((1u << k) - 1);
    z->bitbuf >>= k;
    z->bitcnt -= k;
    return 0;
}

static int room(inflater *z, size_t add)
{
    if (add > z->max - z->len)
        return fail(z, "decompresses to more than the size limit");
    if (z->len + add + 1 <= z->cap)
        return 0;
    size_t ncap = z->cap ? z->cap : 65536;
    while (ncap < z->len + add + 1)
        ncap *= 2;
    unsigned char *o = realloc(z->out, ncap);
    if (!o) {
        z->nomem = 1;
        return fail(z, "out of memory");
    }
    z->out = o;
    z->cap = ncap;
    return 0;
}

/* Builds the code from code lengths; an over-subscribed set is corrupt, an
 * incomplete one is allowed (RFC 1951 permits it for a lone distance code)
 * and fails only if an unused code is met. */
static int build(inflater *z, huffman *h, const uint8_t *lens, int n)
{
    uint16_t offs[MAX_BITS + 2];
    memset(h->count, 0, sizeof(h->count));
    for (int i = 0; i < n; i++)
        h->count[lens[i]]++;
    int left = 1;
    for (int len = 1; len <= MAX_BITS; len++) {
        left <<= 1;
        left -= h->count[len];
        if (left < 0)
            return fail(z, "corrupt (over-subscribed Huffman code)");
    }
    offs[1] = 0;
    for (int len = 1; len <= MAX_BITS; len++)
        offs[len + 1] = (uint16_t)(offs[len] + h->count[len]);
    for (int i = 0; i < n; i++)
        if (lens[i])
            h->sym[offs[lens[i]]++] = (uint16_t)i;
    return 0;
}

/* Codes of one length are consecutive numbers, shorter codes first: read a
 * bit at a time until the code read falls within its length's range. */
static int decode(inflater *z, const huffman *h)
{
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= MAX_BITS; len++) {
        uint32_t b;
        if (bits(z, 1, &b) < 0)
            return -1;
        code |= (int)b;
        int count = h->count[len];
        if (code - first < count)
            return h->sym[index + code - first];
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return fail(z, "corrupt (bad Huffman code)");
}

static const uint16_t len_base[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                      35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129,
                                       193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097,
                                       6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static int codes(inflater *z, const huffman *lit, const huffman *dist)
{
    for (;;) {
        int sym = decode(z, lit);
        if (sym < 0)
            return -1;
        if (sym < 256) {
            if (room(z, 1) < 0)
                return -1;
            z->out[z->len++] = (unsigned char)sym;
            continue;
        }
        if (sym == 256)
            return 0;
        sym -= 257;
        if (sym >= 29)
            return fail(z, "corrupt (bad length code)");
        uint32_t extra;
        if (bits(z, len_extra[sym], &extra) < 0)
            return -1;
        size_t len = len_base[sym] + extra;
        int ds = decode(z, dist);
        if (ds < 0)
            return -1;
        if (ds >= 30)
            return fail(z, "corrupt (bad distance code)");
        if (bits(z, dist_extra[ds], &extra) < 0)
            return -1;
        size_t d = dist_base[ds] + extra;
        if (d > z->len - z->member)
            return fail(z, "corrupt (distance too far back)");
        if (room(z, len) < 0)
            return -1;
        /* Byte by byte: the copy may overlap what it writes (a run). */
        for (size_t i = 0; i < len; i++, z->len++)
            z->out[z->len] = z->out[z->len - d];
    }
}

static int stored(inflater *z)
{
    z->bitbuf = 0;   /* to the byte boundary */
    z->bitcnt = 0;
    if (z->n - z->pos < 4)
        return fail(z, "truncated (the compressed data ends early)");
    const unsigned char *h = z->in + z->pos;
    unsigned len = h[0] | (unsigned)h[1] << 8, nlen = h[2] | (unsigned)h[3] << 8;
    if (len != (~nlen & 0xffff))
        return fail(z, "corrupt (stored block length)");
    z->pos += 4;
    if (z->n - z->pos < len)
        return fail(z, "truncated (the compressed data ends early)");
    if (room(z, len) < 0)
        return -1;
    memcpy(z->out + z->len, z->in + z->pos, len);
    z->len += len;
    z->pos += len;
    return 0;
}

static int fixed(inflater *z)
{
    huffman lit, dist;
    uint8_t lens[MAX_LITLEN];
    int i = 0;
    for (; i < 144; i++) lens[i] = 8;
    for (; i < 256; i++) lens[i] = 9;
    for (; i < 280; i++) lens[i] = 7;
    for (; i < 288; i++) lens[i] = 8;
    if (build(z, &lit, lens, 288) < 0)
        return -1;
    for (i = 0; i < 30; i++)
        lens[i] = 5;
    if (build(z, &dist, lens, 30) < 0)
        return -1;
    return codes(z, &lit, &dist);
}

static int dynamic(inflater *z)
{
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    uint32_t hlit, hdist, hclen, v;
    if (bits(z, 5, &hlit) < 0 || bits(z, 5, &hdist) < 0 || bits(z, 4, &hclen) < 0)
        return -1;
    hlit += 257;
    hdist += 1;
    hclen += 4;
    if (hlit > 286 || hdist > 30)
        return fail(z, "corrupt (too many codes)");
    uint8_t lens[MAX_LITLEN + MAX_DIST];
    memset(lens, 0, sizeof(lens));
    for (uint32_t i = 0; i < hclen; i++) {
        if (bits(z, 3, &v) < 0)
            return -1;
        lens[order[i]] = (uint8_t)v;
    }
    huffman lencode, lit, dist;
    if (build(z, &lencode, lens, 19) < 0)
        return -1;
    memset(lens, 0, sizeof(lens));
    uint32_t i = 0;
    while (i < hlit + hdist) {
        int sym = decode(z, &lencode);
        if (sym < 0)
            return -1;
        if (sym < 16) {
            lens[i++] = (uint8_t)sym;
            continue;
        }
        uint8_t repeat = 0;
        uint32_t times;
        if (sym == 16) {
            if (i == 0)
                return fail(z, "corrupt (repeat with no previous length)");
            repeat = lens[i - 1];
            if (bits(z, 2, &times) < 0)
                return -1;
            times += 3;
        } else if (sym == 17) {
            if (bits(z, 3, &times) < 0)
                return -1;
            times += 3;
        } else {
            if (bits(z, 7, &times) < 0)
                return -1;
            times += 11;
        }
        if (i + times > hlit + hdist)
            return fail(z, "corrupt (too many lengths)");
        while (times--)
            lens[i++] = repeat;
    }
    if (lens[256] == 0)
        return fail(z, "corrupt (no end-of-block code)");
    if (build(z, &lit, lens, (int)hlit) < 0 || build(z, &dist, lens + hlit, (int)hdist) < 0)
        return -1;
    return codes(z, &lit, &dist);
}

static int inflate_member(inflater *z)
{
    uint32_t last, type;
    do {
        if (bits(z, 1, &last) < 0 || bits(z, 2, &type) < 0)
            return -1;
        int rc = type == 0 ? stored(z) : type == 1 ? fixed(z) : type == 2 ? dynamic(z)
                                                               : fail(z, "corrupt (bad block type)");
        if (rc < 0)
            return -1;
    } while (!last);
    z->bitbuf = 0;   /* the trailer starts at the next byte */
    z->bitcnt = 0;
    return 0;
}

int spp_is_gzip(const unsigned char *data, size_t n)
{
    return n >= 2 && data[0] == 0x1f && data[1] == 0x8b;
}

/* Skips a zero-terminated header field. */
static int skip_cstring(inflater *z)
{
    while (z->pos < z->n)
        if (z->in[z->pos++] == 0)
            return 0;
    return fail(z, "truncated (in the gzip header)");
}

static int gzip_member(inflater *z)
{
    if (z->n - z->pos < 10)
        return fail(z, "truncated (in the gzip header)");
    const unsigned char *h = z->in + z->pos;
    if (h[0] != 0x1f || h[1] != 0x8b || h[2] != 8)
        return fail(z, "not a gzip member (or not deflate-compressed)");
    unsigned flags = h[3];
    if (flags & 0xe0)
        return fail(z, "corrupt (reserved gzip flags set)");
    z->pos += 10;
    if (flags & 4) { /* FEXTRA */
        if (z->n - z->pos < 2)
            return fail(z, "truncated (in the gzip header)");
        size_t xlen = z->in[z->pos] | (size_t)z->in[z->pos + 1] << 8;
        z->pos += 2;
        if (z->n - z->pos < xlen)
            return fail(z, "truncated (in the gzip header)");
        z->pos += xlen;
    }
    if ((flags & 8) && skip_cstring(z) < 0)   /* FNAME */
        return -1;
    if ((flags & 16) && skip_cstring(z) < 0)  /* FCOMMENT */
        return -1;
    if (flags & 2) {                          /* FHCRC */
        if (z->n - z->pos < 2)
            return fail(z, "truncated (in the gzip header)");
        z->pos += 2;
    }
    z->member = z->len;
    if (inflate_member(z) < 0)
        return -1;
    if (z->n - z->pos < 8)
        return fail(z, "truncated (the gzip trailer is missing)");
    const unsigned char *t = z->in + z->pos;
    uint32_t crc = t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
    uint32_t size = t[4] | (uint32_t)t[5] << 8 | (uint32_t)t[6] << 16 | (uint32_t)t[7] << 24;
    z->pos += 8;
    size_t got = z->len - z->member;
    if (crc != spp_gzip_crc32(0, z->out ? z->out + z->member : (const unsigned char *)"", got))
        return fail(z, "corrupt (CRC mismatch)");
    if (size != (uint32_t)got)
        return fail(z, "corrupt (size mismatch)");
    return 0;
}

int spp_gunzip(const unsigned char *in, size_t n, size_t max_out, unsigned char **out,
               size_t *outlen, const char **why)
{
    inflater z;
    memset(&z, 0, sizeof(z));
    z.in = in;
    z.n = n;
    z.max = max_out;
    *out = NULL;
    *outlen = 0;
    *why = NULL;
    int rc = SPP_OK;
    /* Concatenated members read as one stream, as gzip -d does; padding of
     * zero bytes after the last one is tolerated. */
    do {
        if (gzip_member(&z) < 0) {
            rc = z.nomem ? SPP_ENOMEM : SPP_EINVAL;
            break;
        }
        while (z.pos < z.n && z.in[z.pos] == 0)
            z.pos++;
    } while (z.pos < z.n);
    if (rc == SPP_OK && room(&z, 0) < 0)
        rc = z.nomem ? SPP_ENOMEM : SPP_EINVAL;
    if (rc < 0) {
        *why = z.why;
        free(z.out);
        return rc;
    }
    z.out[z.len] = '\0';
    *out = z.out;
    *outlen = z.len;
    return SPP_OK;
}
