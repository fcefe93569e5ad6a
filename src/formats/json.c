/* json.c - a bounded JSON reader: one pass, an explicit stack of open
 * containers (no recursion), values in one array, strings in one pool. */
#include "json.h"

#include "../core/profile.h"

#include <stdlib.h>
#include <string.h>

struct spp_json {
    spp_json_value *v;   /* owned; v[0] is the root */
    uint32_t n, cap;
    char *pool;          /* owned: unescaped strings, each NUL-terminated */
    size_t npool;
};

typedef struct open_container {
    uint32_t v;          /* the array or object */
    uint32_t last;       /* its last child so far, 0 if none */
} open_container;

typedef struct parser {
    spp_json *j;
    const char *s;
    size_t len, pos;
    const char *why;     /* static message of the first error */
    int nomem;
    open_container stack[SPP_JSON_MAX_DEPTH];
    uint32_t depth;
    uint32_t key, keylen; /* the key of the member being parsed */
} parser;

static int fail(parser *ps, const char *why)
{
    if (!ps->why)
        ps->why = why;
    return -1;
}

static void skip_ws(parser *ps)
{
    while (ps->pos < ps->len) {
        char c = ps->s[ps->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        ps->pos++;
    }
}

static int peek(const parser *ps) { return ps->pos < ps->len ? (unsigned char)ps->s[ps->pos] : -1; }

/* Adds a value of type as the next child of the innermost open container,
 * its index in *out. */
static int add_value(parser *ps, uint32_t type, uint32_t *out)
{
    spp_json *j = ps->j;
    if (j->n == j->cap) {
        if (j->cap >= UINT32_MAX / 2) {
            ps->nomem = 1;
            return -1;
        }
        uint32_t ncap = j->cap ? j->cap * 2 : 256;
        spp_json_value *nv = realloc(j->v, (size_t)ncap * sizeof(*nv));
        if (!nv) {
            ps->nomem = 1;
            return -1;
        }
        j->v = nv;
        j->cap = ncap;
    }
    uint32_t id = j->n++;
    spp_json_value *v = &j->v[id];
    memset(v, 0, sizeof(*v));
    v->type = type;
    if (ps->depth) {
        open_container *c = &ps->stack[ps->depth - 1];
        if (j->v[c->v].type == SPP_JSON_OBJECT) {
            v->key = ps->key;
            v->keylen = ps->keylen;
        }
        if (c->last)
            j->v[c->last].next = id;
        else
            j->v[c->v].u.kids.first = id;
        c->last = id;
        j->v[c->v].u.kids.count++;
    }
    /* The root is index 0 and is nobody's child, so 0 means "none" above. */
    *out = id;
    return 0;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

size_t spp_json_utf8(char *d, unsigned cp)
{
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xc0 | cp >> 6);
        d[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xe0 | cp >> 12);
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        d[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    d[0] = (char)(0xf0 | cp >> 18);
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    d[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Parses the string at pos (its opening quote) into the pool. The pool was
 * sized to the input: an unescaped string and its NUL never take more bytes
 * than its escaped form and quotes. */
static int parse_string(parser *ps, uint32_t *off, uint32_t *len)
{
    spp_json *j = ps->j;
    const char *s = ps->s;
    size_t i = ps->pos + 1, start = j->npool;
    char *d = j->pool + j->npool;
    for (;;) {
        if (i >= ps->len) {
            ps->pos = i;
            return fail(ps, "unterminated string");
        }
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            break;
        if (c < 0x20) {
            ps->pos = i;
            return fail(ps, "control character in a string");
        }
        if (c != '\\') {
            *d++ = (char)c;
            i++;
            continue;
        }
        if (i + 1 >= ps->len) {
            ps->pos = i;
            return fail(ps, "unterminated string");
        }
        char e = s[i + 1];
        i += 2;
        switch (e) {
        case '"': *d++ = '"'; break;
        case '\\': *d++ = '\\'; break;
        case '/': *d++ = '/'; break;
        case 'b': *d++ = '\b'; break;
        case 'f': *d++ = '\f'; break;
        case 'n': *d++ = '\n'; break;
        case 'r': *d++ = '\r'; break;
        case 't': *d++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (i + 4 > ps->len || hex4(s + i, &cp) < 0) {
                ps->pos = i;
                return fail(ps, "bad \\u escape");
            }
            i += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && i + 6 <= ps->len && s[i] == '\\' && s[i + 1] == 'u' &&
                hex4(s + i + 2, &lo) == 0 && lo >= 0xdc00 && lo <= 0xdfff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 6;
            } else if (cp >= 0xd800 && cp <= 0xdfff) {
                cp = 0xfffd; /* a lone surrogate has no UTF-8 form */
            }
            d += spp_json_utf8(d, cp);
            break;
        }
        default:
            ps->pos = i - 1;
            return fail(ps, "bad escape in a string");
        }
    }
    *d++ = '\0';
    ps->pos = i + 1;
    *off = (uint32_t)start;
    *len = (uint32_t)((size_t)(d - (j->pool + start)) - 1);
    j->npool = (size_t)(d - j->pool);
    return 0;
}

static int digits(parser *ps)
{
    size_t start = ps->pos;
    while (ps->pos < ps->len && ps->s[ps->pos] >= '0' && ps->s[ps->pos] <= '9')
        ps->pos++;
    return ps->pos > start ? 0 : fail(ps, "bad number");
}

static int parse_number(parser *ps, double *out)
{
    size_t start = ps->pos;
    if (peek(ps) == '-')
        ps->pos++;
    if (peek(ps) == '0')
        ps->pos++;
    else if (digits(ps) < 0)
        return -1;
    if (peek(ps) == '.') {
        ps->pos++;
        if (digits(ps) < 0)
            return -1;
    }
    if (peek(ps) == 'e' || peek(ps) == 'E') {
        ps->pos++;
        if (peek(ps) == '+' || peek(ps) == '-')
            ps->pos++;
        if (digits(ps) < 0)
            return -1;
    }
    char buf[400];
    size_t n = ps->pos - start;
    if (n >= sizeof(buf)) {
        ps->pos = start;
        return fail(ps, "number too long");
    }
    memcpy(buf, ps->s + start, n);
    buf[n] = '\0';
    *out = strtod(buf, NULL); /* the grammar was checked above */
    return 0;
}

static int literal(parser *ps, const char *word)
{
    size_t n = strlen(word);
    if (ps->len - ps->pos < n || memcmp(ps->s + ps->pos, word, n) != 0)
        return fail(ps, "unexpected character");
    ps->pos += n;
    return 0;
}

/* After '{' or ',' in an object: the member's key and its colon. */
static int member_key(parser *ps)
{
    skip_ws(ps);
    if (peek(ps) != '"')
        return fail(ps, "expected a member name");
    if (parse_string(ps, &ps->key, &ps->keylen) < 0)
        return -1;
    skip_ws(ps);
    if (peek(ps) != ':')
        return fail(ps, "expected ':'");
    ps->pos++;
    return 0;
}

/* Parses one value; containers are opened (pushed), not finished. */
static int parse_value(parser *ps, int *opened)
{
    *opened = 0;
    skip_ws(ps);
    int c = peek(ps);
    uint32_t id;
    if (c == '{' || c == '[') {
        if (ps->depth == SPP_JSON_MAX_DEPTH)
            return fail(ps, "nested too deeply");
        if (add_value(ps, c == '{' ? SPP_JSON_OBJECT : SPP_JSON_ARRAY, &id) < 0)
            return -1;
        ps->stack[ps->depth].v = id;
        ps->stack[ps->depth].last = 0;
        ps->depth++;
        ps->pos++;
        *opened = 1;
        return 0;
    }
    if (c == '"') {
        uint32_t off, len;
        if (parse_string(ps, &off, &len) < 0 || add_value(ps, SPP_JSON_STRING, &id) < 0)
            return -1;
        spp_json_value *v = &ps->j->v[id];
        v->u.str.off = off;
        v->u.str.len = len;
        return 0;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        double d;
        if (parse_number(ps, &d) < 0 || add_value(ps, SPP_JSON_NUMBER, &id) < 0)
            return -1;
        ps->j->v[id].u.num = d;
        return 0;
    }
    uint32_t type = c == 't' ? SPP_JSON_TRUE : c == 'f' ? SPP_JSON_FALSE : SPP_JSON_NULL;
    if (literal(ps, c == 't' ? "true" : c == 'f' ? "false" : "null") < 0)
        return -1;
    return add_value(ps, type, &id);
}

static int parse(parser *ps)
{
    int opened;
    if (parse_value(ps, &opened) < 0)
        return -1;
    for (;;) {
        skip_ws(ps);
        if (opened) {
            /* Just after '{' or '[': empty, or the first member or element. */
            const spp_json_value *c = &ps->j->v[ps->stack[ps->depth - 1].v];
            int close = c->type == SPP_JSON_OBJECT ? '}' : ']';
            if (peek(ps) == close) {
                ps->pos++;
                ps->depth--;
                opened = 0;
                continue;
            }
            if (c->type == SPP_JSON_OBJECT && member_key(ps) < 0)
                return -1;
            if (parse_value(ps, &opened) < 0)
                return -1;
            continue;
        }
        if (!ps->depth)
            break;
        const spp_json_value *c = &ps->j->v[ps->stack[ps->depth - 1].v];
        int close = c->type == SPP_JSON_OBJECT ? '}' : ']';
        int ch = peek(ps);
        if (ch == close) {
            ps->pos++;
            ps->depth--;
            continue;
        }
        if (ch != ',')
            return fail(ps, c->type == SPP_JSON_OBJECT ? "expected ',' or '}'" : "expected ',' or ']'");
        ps->pos++;
        if (c->type == SPP_JSON_OBJECT && member_key(ps) < 0)
            return -1;
        if (parse_value(ps, &opened) < 0)
            return -1;
    }
    if (ps->pos != ps->len)
        return fail(ps, "data after the end of the document");
    return 0;
}

int spp_json_parse(const char *text, size_t len, spp_json **out, size_t *err_at, const char **why)
{
    *out = NULL;
    *err_at = 0;
    *why = NULL;
    if (len > SPP_JSON_MAX_BYTES) {
        *why = "document too large";
        return SPP_EINVAL;
    }
    spp_json *j = calloc(1, sizeof(*j));
    parser *ps = malloc(sizeof(*ps));
    if (!j || !ps) {
        free(j);
        free(ps);
        return SPP_ENOMEM;
    }
    memset(ps, 0, sizeof(*ps));
    j->pool = malloc(len + 1);
    ps->j = j;
    ps->s = text;
    ps->len = len;
    int rc = SPP_OK;
    if (!j->pool)
        rc = SPP_ENOMEM;
    else if (parse(ps) < 0)
        rc = ps->nomem ? SPP_ENOMEM : SPP_EINVAL;
    if (rc == SPP_EINVAL) {
        *err_at = ps->pos;
        *why = ps->why ? ps->why : "malformed";
    }
    free(ps);
    if (rc < 0) {
        spp_json_free(j);
        return rc;
    }
    *out = j;
    return SPP_OK;
}

void spp_json_free(spp_json *j)
{
    if (!j)
        return;
    free(j->v);
    free(j->pool);
    free(j);
}

const spp_json_value *spp_json_root(const spp_json *j) { return j->n ? &j->v[0] : NULL; }

const spp_json_value *spp_json_first(const spp_json *j, const spp_json_value *v)
{
    if (!v || (v->type != SPP_JSON_ARRAY && v->type != SPP_JSON_OBJECT) || !v->u.kids.first)
        return NULL;
    return &j->v[v->u.kids.first];
}

const spp_json_value *spp_json_next(const spp_json *j, const spp_json_value *v)
{
    return v && v->next ? &j->v[v->next] : NULL;
}

const spp_json_value *spp_json_member(const spp_json *j, const spp_json_value *obj, const char *key)
{
    if (!obj || obj->type != SPP_JSON_OBJECT)
        return NULL;
    size_t n = strlen(key);
    for (const spp_json_value *m = spp_json_first(j, obj); m; m = spp_json_next(j, m))
        if (m->keylen == n && memcmp(j->pool + m->key, key, n) == 0)
            return m;
    return NULL;
}

const char *spp_json_string(const spp_json *j, const spp_json_value *v, size_t *len)
{
    if (!v || v->type != SPP_JSON_STRING)
        return NULL;
    if (len)
        *len = v->u.str.len;
    return j->pool + v->u.str.off;
}

int spp_json_number(const spp_json_value *v, double *out)
{
    if (!v || v->type != SPP_JSON_NUMBER)
        return 0;
    *out = v->u.num;
    return 1;
}
