/* values.c - a frame's local variables and reprs of simple values, read
 * from (possibly another process's) memory through an spp_reader. */
#include "values.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/profile.h"
#include "walker.h"

#define MAX_SLOTS 4096      /* localsplus entries read; more is implausible */
#define MAX_INT_DIGITS 256  /* ~2,300 decimal digits, far past the repr bound */

/* 3.11+ co_localspluskinds bits. */
#define KIND_HIDDEN 0x10
#define KIND_CELL 0x40
#define KIND_FREE 0x80

/* Where a repr is built: a repr that fits in SPP_REPR_MAX bytes is kept
 * whole; a longer one is cut after the last character (or escape) that
 * ends within SPP_REPR_MAX - 3 bytes, and "..." added. */
typedef struct text {
    char *buf;     /* SPP_REPR_MAX + 1 bytes */
    size_t len;
    size_t keep;   /* where to cut if it must be cut */
    int full;      /* something did not fit */
} text;

static void put(text *t, const char *s, size_t n)
{
    if (t->full || t->len + n > SPP_REPR_MAX) {
        t->full = 1;
        return;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
    if (t->len <= SPP_REPR_MAX - 3)
        t->keep = t->len;
}

/* cut: the value had more than was read. */
static void finish(text *t, int cut)
{
    if (t->full || cut) {
        memcpy(t->buf + t->keep, "...", 4);
        t->len = t->keep + 3;
    }
}

static int read_ptr(const spp_reader *r, uint64_t addr, uint64_t *out)
{
    return spp_read(r, addr, out, sizeof(*out));
}

/* A NUL-terminated C string at addr (tp_name), read in aligned 16-byte
 * pieces so that no read crosses into a page that may be unmapped. Bytes
 * that are not printable become '?'. */
static int read_cstr(const spp_reader *r, uint64_t addr, char *buf, size_t cap)
{
    size_t len = 0;
    while (addr && len + 1 < cap) {
        unsigned char chunk[16];
        uint64_t base = addr & ~(uint64_t)15;
        if (spp_read(r, base, chunk, sizeof(chunk)) < 0)
            return SPP_EINVAL;
        for (size_t i = (size_t)(addr - base); i < 16; i++) {
            if (!chunk[i] || len + 1 >= cap)
                goto done;
            buf[len++] = chunk[i] > 0x20 && chunk[i] != 0x7f ? (char)chunk[i] : '?';
        }
        addr = base + 16;
    }
done:
    buf[len] = '\0';
    return len ? (int)len : SPP_EINVAL;
}

/* An int's decimal digits: the magnitude is converted digit by digit
 * (most significant first) into base 10^9 limbs. */
static int int_repr(const spp_pyoffsets *o, const spp_reader *r, uint64_t obj, text *t)
{
    uint64_t ndigits;
    int negative;
    if (o->long_tag >= 0) {
        /* 3.12+: lv_tag = digit count << 3 | sign (0 positive, 1 zero, 2
         * negative). */
        uint64_t tag;
        if (read_ptr(r, obj + (uint64_t)o->long_tag, &tag) < 0)
            return SPP_EINVAL;
        ndigits = tag >> 3;
        negative = (tag & 3) == 2;
        if ((tag & 3) == 1)
            ndigits = 0;
    } else {
        int64_t size;
        if (spp_read(r, obj + (uint64_t)o->bytes_size, &size, sizeof(size)) < 0)
            return SPP_EINVAL;
        negative = size < 0;
        ndigits = size < 0 ? (uint64_t)0 - (uint64_t)size : (uint64_t)size;
    }
    unsigned shift = (unsigned)o->long_shift, dsize = (unsigned)o->long_digit_size;
    if ((dsize != 2 && dsize != 4) || shift < 8 || shift >= 8 * dsize)
        return SPP_EINVAL;
    if (ndigits > MAX_INT_DIGITS) {
        char s[80];
        snprintf(s, sizeof(s), "<int of about %" PRIu64 " bits at 0x%" PRIx64 ">", ndigits * shift,
                 obj);
        put(t, s, strlen(s));
        return SPP_OK;
    }
    unsigned char raw[MAX_INT_DIGITS * 4];
    if (ndigits && spp_read(r, obj + (uint64_t)o->long_digits, raw, ndigits * dsize) < 0)
        return SPP_EINVAL;
    /* Each limb holds 9 decimal digits; a 30-bit digit adds fewer than 10
     * bits, so ndigits * shift / 29 + 1 limbs are enough. */
    uint32_t limbs[MAX_INT_DIGITS * 32 / 29 + 2];
    size_t nl = 0;
    for (uint64_t i = ndigits; i-- > 0;) {
        uint32_t d;
        if (dsize == 4)
            memcpy(&d, raw + i * 4, 4);
        else {
            uint16_t h;
            memcpy(&h, raw + i * 2, 2);
            d = h;
        }
        uint64_t carry = d & ((1u << shift) - 1);
        for (size_t k = 0; k < nl; k++) {
            uint64_t v = ((uint64_t)limbs[k] << shift) + carry;
            limbs[k] = (uint32_t)(v % 1000000000u);
            carry = v / 1000000000u;
        }
        while (carry && nl < sizeof(limbs) / sizeof(limbs[0])) {
            limbs[nl++] = (uint32_t)(carry % 1000000000u);
            carry /= 1000000000u;
        }
    }
    /* Digit by digit, so that a long one is cut exactly at the bound. */
    char s[24];
    if (negative && nl)
        put(t, "-", 1);
    snprintf(s, sizeof(s), "%" PRIu32, nl ? limbs[nl - 1] : 0);
    for (size_t j = 0; s[j]; j++)
        put(t, s + j, 1);
    for (size_t k = nl > 0 ? nl - 1 : 0; k-- > 0 && !t->full;) {
        snprintf(s, sizeof(s), "%09" PRIu32, limbs[k]);
        for (size_t j = 0; s[j]; j++)
            put(t, s + j, 1);
    }
    return SPP_OK;
}

/* Python's repr of a float: the shortest digits that read back as the
 * same double, in fixed notation when the decimal exponent is between -4
 * and 16, else as d.ddde+XX; ".0" added to integral fixed values. */
static void float_repr(double v, text *t)
{
    char s[64];
    if (isnan(v) || isinf(v)) {
        snprintf(s, sizeof(s), "%s", isnan(v) ? "nan" : v < 0 ? "-inf" : "inf");
        put(t, s, strlen(s));
        return;
    }
    char e[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof(e), "%.*e", prec - 1, v);
        if (strtod(e, NULL) == v)
            break;
    }
    /* e is [-]d[.ddd]e[+-]XX: gather the digits and the exponent. */
    char digits[24];
    size_t nd = 0;
    const char *p = e;
    int neg = *p == '-';
    if (neg)
        p++;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && nd < sizeof(digits) - 1)
            digits[nd++] = *p;
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    int decpt = exp10 + 1; /* digits before the decimal point */
    size_t n = 0;
    if (neg)
        s[n++] = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            s[n++] = '0';
            s[n++] = '.';
            for (int i = decpt; i < 0; i++)
                s[n++] = '0';
            memcpy(s + n, digits, nd);
            n += nd;
        } else {
            for (int i = 0; i < decpt; i++)
                s[n++] = (size_t)i < nd ? digits[i] : '0';
            s[n++] = '.';
            if ((size_t)decpt < nd) {
                memcpy(s + n, digits + decpt, nd - (size_t)decpt);
                n += nd - (size_t)decpt;
            } else {
                s[n++] = '0';
            }
        }
        s[n] = '\0';
    } else {
        s[n++] = digits[0];
        if (nd > 1) {
            s[n++] = '.';
            memcpy(s + n, digits + 1, nd - 1);
            n += nd - 1;
        }
        snprintf(s + n, sizeof(s) - n, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    put(t, s, strlen(s));
}

/* Whether str.isprintable() holds for a non-ASCII code point, for the
 * common cases: the Latin-1 controls, spaces other than ' ', format
 * characters, surrogates, private use and noncharacters are not. (The
 * Unicode database is not at hand: unassigned code points are shown as
 * printable, where Python escapes them.) */
static int printable(uint32_t c)
{
    return !(c < 0xa1 || c == 0xad || (c >= 0x600 && c <= 0x605) || c == 0x61c || c == 0x6dd ||
             c == 0x70f || c == 0x1680 || c == 0x180e || (c >= 0x2000 && c <= 0x200f) ||
             (c >= 0x2028 && c <= 0x202f) || (c >= 0x205f && c <= 0x206f) || c == 0x3000 ||
             (c >= 0xd800 && c <= 0xf8ff) || c == 0xfeff || (c >= 0xfff9 && c <= 0xfffb) ||
             (c & 0xfffe) == 0xfffe || c >= 0xf0000 || (c >= 0xe0000 && c <= 0xe0fff));
}

/* One character of a str or bytes repr; quote is the delimiter chosen. */
static void put_char(text *t, uint32_t c, char quote, int is_bytes)
{
    char s[12];
    if (c == (uint32_t)quote || c == '\\') {
        s[0] = '\\';
        s[1] = (char)c;
        put(t, s, 2);
    } else if (c == '\t' || c == '\n' || c == '\r') {
        s[0] = '\\';
        s[1] = c == '\t' ? 't' : c == '\n' ? 'n' : 'r';
        put(t, s, 2);
    } else if (c >= 0x20 && c < 0x7f) {
        s[0] = (char)c;
        put(t, s, 1);
    } else if (is_bytes || c < 0x80 || !printable(c)) {
        int n = snprintf(s, sizeof(s), c <= 0xff ? "\\x%02" PRIx32 : c <= 0xffff ? "\\u%04" PRIx32
                                                                                   : "\\U%08" PRIx32,
                         c);
        put(t, s, (size_t)n);
    } else {
        /* printable non-ASCII: as UTF-8 */
        size_t n;
        if (c < 0x800) {
            s[0] = (char)(0xc0 | (c >> 6));
            s[1] = (char)(0x80 | (c & 0x3f));
            n = 2;
        } else if (c < 0x10000) {
            s[0] = (char)(0xe0 | (c >> 12));
            s[1] = (char)(0x80 | ((c >> 6) & 0x3f));
            s[2] = (char)(0x80 | (c & 0x3f));
            n = 3;
        } else {
            s[0] = (char)(0xf0 | (c >> 18));
            s[1] = (char)(0x80 | ((c >> 12) & 0x3f));
            s[2] = (char)(0x80 | ((c >> 6) & 0x3f));
            s[3] = (char)(0x80 | (c & 0x3f));
            n = 4;
        }
        put(t, s, n);
    }
}

/* Python picks ' unless the text has a ' and no ". */
static char pick_quote(const uint32_t *c, size_t n)
{
    int single = 0, dbl = 0;
    for (size_t i = 0; i < n; i++) {
        single |= c[i] == '\'';
        dbl |= c[i] == '"';
    }
    return single && !dbl ? '"' : '\'';
}

static void quoted(text *t, const uint32_t *c, size_t n, int is_bytes, int cut)
{
    char q = pick_quote(c, n);
    if (is_bytes)
        put(t, "b", 1);
    put(t, &q, 1);
    for (size_t i = 0; i < n && !t->full; i++)
        put_char(t, c[i], q, is_bytes);
    if (!cut)
        put(t, &q, 1);
    finish(t, cut);
}

/* Python picks a str's or bytes' quote from the whole text; the first
 * MAX_SCAN characters decide here (the repr shows far fewer). */
#define MAX_SCAN 4096

static int str_repr(const spp_pyoffsets *o, const spp_reader *r, uint64_t obj, text *t)
{
    int64_t length;
    uint32_t *cps = malloc(MAX_SCAN * sizeof(uint32_t));
    int n = cps ? spp_read_str_chars(o, r, obj, cps, MAX_SCAN, &length) : SPP_ENOMEM;
    if (n >= 0)
        quoted(t, cps, (size_t)n, 0, n < length);
    free(cps);
    return n < 0 ? n : SPP_OK;
}

static int bytes_repr(const spp_pyoffsets *o, const spp_reader *r, uint64_t obj, text *t)
{
    int64_t size;
    if (spp_read(r, obj + (uint64_t)o->bytes_size, &size, sizeof(size)) < 0 || size < 0)
        return SPP_EINVAL;
    size_t n = size < MAX_SCAN ? (size_t)size : MAX_SCAN;
    unsigned char *raw = malloc(n + 1);
    uint32_t *c = malloc((n + 1) * sizeof(uint32_t));
    int rc = raw && c ? SPP_OK : SPP_ENOMEM;
    if (rc == SPP_OK && n)
        rc = spp_read(r, obj + (uint64_t)o->bytes_sval, raw, n) < 0 ? SPP_EINVAL : SPP_OK;
    if (rc == SPP_OK) {
        for (size_t i = 0; i < n; i++)
            c[i] = raw[i];
        quoted(t, c, n, 1, (int64_t)n < size);
    }
    free(raw);
    free(c);
    return rc;
}

int spp_value_read(const spp_pyoffsets *o, const spp_reader *r, const spp_pytypes *ty, uint64_t obj,
                   spp_value *out)
{
    text t = {out->repr, 0, 0, 0};
    out->repr[0] = '\0';
    out->type[0] = '\0';
    uint64_t type;
    int rc = SPP_EINVAL;
    if (!obj || read_ptr(r, obj + (uint64_t)o->object_type, &type) < 0 || !type)
        goto out;
    const char *name = NULL;
    if (obj == ty->none) {
        name = "NoneType";
        put(&t, "None", 4);
        rc = SPP_OK;
    } else if (type == ty->bool_type && (obj == ty->true_obj || obj == ty->false_obj)) {
        name = "bool";
        put(&t, obj == ty->true_obj ? "True" : "False", obj == ty->true_obj ? 4 : 5);
        rc = SPP_OK;
    } else if (type == ty->int_type && o->long_digits >= 0) {
        name = "int";
        rc = int_repr(o, r, obj, &t);
        finish(&t, 0);
    } else if (type == ty->float_type && o->float_value >= 0) {
        double v;
        name = "float";
        rc = spp_read(r, obj + (uint64_t)o->float_value, &v, sizeof(v));
        if (rc == 0)
            float_repr(v, &t);
        finish(&t, 0);
    } else if (type == ty->str_type) {
        name = "str";
        rc = str_repr(o, r, obj, &t);
    } else if (type == ty->bytes_type) {
        name = "bytes";
        rc = bytes_repr(o, r, obj, &t);
    }
    if (name) {
        snprintf(out->type, sizeof(out->type), "%s", name);
        if (rc == SPP_OK)
            return rc;
    } else {
        uint64_t tp_name = 0;
        if (o->type_name < 0 || read_ptr(r, type + (uint64_t)o->type_name, &tp_name) < 0 ||
            read_cstr(r, tp_name, out->type, sizeof(out->type)) < 0)
            goto out;
        snprintf(out->repr, sizeof(out->repr), "<%s at 0x%" PRIx64 ">", out->type, obj);
        return SPP_OK;
    }
out:
    snprintf(out->repr, sizeof(out->repr), "<unreadable at 0x%" PRIx64 ">", obj);
    return SPP_EINVAL;
}

/* The tuple of str at addr: its size, and up to cap item pointers. */
static int read_tuple(const spp_pyoffsets *o, const spp_reader *r, uint64_t addr, uint64_t *items,
                      int cap)
{
    int64_t size;
    if (!addr || spp_read(r, addr + (uint64_t)o->bytes_size, &size, sizeof(size)) < 0 || size < 0 ||
        size > MAX_SLOTS)
        return SPP_EINVAL;
    int n = size < cap ? (int)size : cap;
    if (n && spp_read(r, addr + (uint64_t)o->tuple_item, items, (size_t)n * 8) < 0)
        return SPP_EINVAL;
    return n;
}

int spp_frame_locals(const spp_pyoffsets *o, const spp_reader *r, const spp_pytypes *t,
                     uint64_t frame, uint64_t code, spp_local *out, int cap, int *more)
{
    *more = 0;
    if (o->frame_localsplus < 0 || o->code_varnames < 0 || o->tuple_item < 0)
        return SPP_ENOSYS;
    int rc = SPP_EINVAL, stored = 0;
    uint64_t *names = malloc(MAX_SLOTS * sizeof(uint64_t));
    uint64_t *slots = malloc(MAX_SLOTS * sizeof(uint64_t));
    unsigned char *kinds = malloc(MAX_SLOTS);
    if (!names || !slots || !kinds) {
        rc = SPP_ENOMEM;
        goto out;
    }
    uint64_t tuple;
    int n;
    if (read_ptr(r, code + (uint64_t)o->code_varnames, &tuple) < 0 ||
        (n = read_tuple(o, r, tuple, names, MAX_SLOTS)) < 0)
        goto out;
    if (o->code_kinds >= 0) {
        /* 3.11+: one kind byte per name. */
        uint64_t kb;
        int64_t klen;
        if (read_ptr(r, code + (uint64_t)o->code_kinds, &kb) < 0 || !kb ||
            spp_read(r, kb + (uint64_t)o->bytes_size, &klen, sizeof(klen)) < 0 || klen != n ||
            (n && spp_read(r, kb + (uint64_t)o->bytes_sval, kinds, (size_t)n) < 0))
            goto out;
    } else {
        /* 3.9/3.10: co_varnames, then co_cellvars and co_freevars. */
        memset(kinds, 0, (size_t)n);
        uint64_t groups[2];
        if (read_ptr(r, code + (uint64_t)o->code_cellvars, &groups[0]) < 0 ||
            read_ptr(r, code + (uint64_t)o->code_freevars, &groups[1]) < 0)
            goto out;
        for (int g = 0; g < 2; g++) {
            int m = read_tuple(o, r, groups[g], names + n, MAX_SLOTS - n);
            if (m < 0)
                goto out;
            memset(kinds + n, g ? KIND_FREE : KIND_CELL, (size_t)m);
            n += m;
        }
    }
    if (n && spp_read(r, frame + (uint64_t)o->frame_localsplus, slots, (size_t)n * 8) < 0)
        goto out;
    uint64_t untag = ~(uint64_t)(uint32_t)o->locals_tag_bits;
    for (int i = 0; i < n; i++) {
        uint64_t v = slots[i] & untag;
        if (!v || (kinds[i] & KIND_HIDDEN))
            continue;
        if (kinds[i] & (KIND_CELL | KIND_FREE)) {
            /* A cell (once the function has made it) is shown by what it
             * holds; an empty one is a closure variable not bound yet. */
            uint64_t type, inner = v;
            if (t->cell_type && o->cell_ref >= 0 &&
                read_ptr(r, v + (uint64_t)o->object_type, &type) == 0 && type == t->cell_type &&
                read_ptr(r, v + (uint64_t)o->cell_ref, &inner) < 0)
                inner = 0x1; /* unreadable, shown as such */
            if (!inner)
                continue;
            v = inner;
        }
        if (stored == cap) {
            (*more)++;
            continue;
        }
        spp_local *l = &out[stored++];
        if (spp_read_str(o, r, names[i], l->name, sizeof(l->name)) < 0)
            snprintf(l->name, sizeof(l->name), "?");
        spp_value_read(o, r, t, v, &l->value);
    }
    rc = stored;
out:
    free(names);
    free(slots);
    free(kinds);
    return rc;
}
