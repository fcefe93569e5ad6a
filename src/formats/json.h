/* json.h - a small, bounded JSON reader (RFC 8259) for the profiles spprof
 * reads back (speedscope, Chrome traces).
 *
 * The whole document is parsed into one array of values and one pool of
 * unescaped strings; nothing points back into the input. Input is hostile:
 * nesting is capped (SPP_JSON_MAX_DEPTH), every byte is checked, and a parse
 * error says where and why. Not async-signal-safe; thread-safe (no shared
 * state).
 */
#ifndef SPP_JSON_H
#define SPP_JSON_H

#include <stddef.h>
#include <stdint.h>

#define SPP_JSON_MAX_DEPTH 512
#define SPP_JSON_MAX_BYTES ((size_t)1 << 30) /* offsets are 32 bits */

enum spp_json_type {
    SPP_JSON_NULL, SPP_JSON_FALSE, SPP_JSON_TRUE, SPP_JSON_NUMBER, SPP_JSON_STRING,
    SPP_JSON_ARRAY, SPP_JSON_OBJECT,
};

typedef struct spp_json_value {
    uint32_t type;      /* enum spp_json_type */
    uint32_t next;      /* index of the next sibling, 0 if none (0 is the root) */
    uint32_t key, keylen; /* object members: the key, in the string pool */
    union {
        double num;
        struct { uint32_t off, len; } str;      /* in the string pool */
        struct { uint32_t first, count; } kids; /* first child's index (0 if none) */
    } u;
} spp_json_value;

typedef struct spp_json spp_json;

/* Parses len bytes. Returns 0 and *out (owned by the caller), SPP_ENOMEM, or
 * SPP_EINVAL with *err_at the byte offset and *why a static message. */
int spp_json_parse(const char *text, size_t len, spp_json **out, size_t *err_at, const char **why);
void spp_json_free(spp_json *j);   /* NULL is a no-op */

const spp_json_value *spp_json_root(const spp_json *j);
/* The first element or member of an array or object, then the next; NULL
 * at the end or for other types. */
const spp_json_value *spp_json_first(const spp_json *j, const spp_json_value *v);
const spp_json_value *spp_json_next(const spp_json *j, const spp_json_value *v);
/* The member of obj named key (the first of duplicates), or NULL. */
const spp_json_value *spp_json_member(const spp_json *j, const spp_json_value *obj, const char *key);
/* A string's bytes (NUL-terminated, may hold NULs) or NULL if v is not a string. */
const char *spp_json_string(const spp_json *j, const spp_json_value *v, size_t *len);
/* Whether v is a number, stored in *out. */
int spp_json_number(const spp_json_value *v, double *out);

/* Writes code point cp (at most U+10FFFF) as UTF-8 at d; returns 1 to 4. */
size_t spp_json_utf8(char *d, unsigned cp);

#endif
