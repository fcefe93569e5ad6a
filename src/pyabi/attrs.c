/* attrs.c - dict entries, module globals and instance attributes read
 * through an spp_reader, and the names of threads in threading._active. */
#include "attrs.h"

#include <string.h>

#include "../core/profile.h"
#include "walker.h"

/* Entries looked at per call of the public functions, nested lookups
 * included, so that hostile tables (an _active of thousands of entries,
 * each an object with a huge dict) cannot make one read take minutes;
 * sys.modules has hundreds, a Thread's dict a dozen. */
#define MAX_ENTRIES 65536
#define MAX_LOG2_SIZE 26     /* a larger table is implausible here */
#define MAX_BASICSIZE 4096   /* tp_basicsize and tp_dictoffset of a plain class */
#define CHUNK 32             /* entries read at once */
#define MAX_ENTRY_SIZE 32

/* The entries of a dict's keys object, and where its values are when the
 * entries do not hold them (a split table: shared keys, values apart). */
typedef struct dict_view {
    uint64_t entries;  /* address of entry 0 */
    uint64_t values;   /* address of values[0], or 0 */
    int64_t n;         /* entries to look at */
    uint32_t esize;    /* bytes per entry; key and value are its last two pointers */
} dict_view;

static int read_ptr(const spp_reader *r, uint64_t addr, uint64_t *out)
{
    return spp_read(r, addr, out, sizeof(*out));
}

static int read_u8(const spp_reader *r, uint64_t addr, uint8_t *out)
{
    return spp_read(r, addr, out, sizeof(*out));
}

/* Fills v from the keys object at keys, with values (0 for a combined
 * table) holding at most vcap of them. */
static int keys_view(const spp_pyoffsets *o, const spp_reader *r, uint64_t keys, uint64_t values,
                     int64_t vcap, dict_view *v)
{
    int64_t nentries, slots;
    uint64_t index_bytes;
    uint32_t esize = (uint32_t)o->entry_size;
    if (!keys || o->keys_nentries < 0 || o->keys_indices < 0 || o->entry_size < 16 ||
        o->entry_size > MAX_ENTRY_SIZE ||
        spp_read(r, keys + (uint64_t)o->keys_nentries, &nentries, sizeof(nentries)) < 0)
        return SPP_EINVAL;
    if (o->keys_size >= 0) {
        /* 3.9/3.10: dk_size slots of 1, 2 or 4 bytes (8 past 2^32). */
        if (spp_read(r, keys + (uint64_t)o->keys_size, &slots, sizeof(slots)) < 0 || slots < 8 ||
            slots > ((int64_t)1 << MAX_LOG2_SIZE) || (slots & (slots - 1)))
            return SPP_EINVAL;
        index_bytes = (uint64_t)slots * (slots <= 0xff ? 1 : slots <= 0xffff ? 2 : 4);
    } else {
        /* 3.11+: 2^dk_log2_size slots in 2^dk_log2_index_bytes bytes; the
         * entries of unicode and split keys hold no hash. */
        uint8_t log2, log2_bytes, kind;
        if (o->keys_log2_size < 0 || o->keys_log2_index_bytes < 0 || o->keys_kind < 0 ||
            read_u8(r, keys + (uint64_t)o->keys_log2_size, &log2) < 0 ||
            read_u8(r, keys + (uint64_t)o->keys_log2_index_bytes, &log2_bytes) < 0 ||
            read_u8(r, keys + (uint64_t)o->keys_kind, &kind) < 0 || log2 < 3 ||
            log2 > MAX_LOG2_SIZE || log2_bytes < log2 || log2_bytes > log2 + 3 || kind > 2)
            return SPP_EINVAL;
        slots = (int64_t)1 << log2;
        index_bytes = (uint64_t)1 << log2_bytes;
        if (kind != 0) {
            if (o->unicode_entry_size < 16 || o->unicode_entry_size > MAX_ENTRY_SIZE)
                return SPP_EINVAL;
            esize = (uint32_t)o->unicode_entry_size;
        }
    }
    if (nentries < 0 || nentries > slots)
        return SPP_EINVAL;
    v->entries = keys + (uint64_t)o->keys_indices + index_bytes;
    v->values = values;
    v->esize = esize;
    v->n = nentries;
    if (values && v->n > vcap)
        v->n = vcap;
    return SPP_OK;
}

/* The view of a dict object: its keys, and its values when split. */
static int dict_view_of(const spp_pyoffsets *o, const spp_reader *r, uint64_t dict, dict_view *v)
{
    uint64_t keys, values;
    if (!dict || o->dict_keys < 0 || o->dict_values < 0 ||
        read_ptr(r, dict + (uint64_t)o->dict_keys, &keys) < 0 ||
        read_ptr(r, dict + (uint64_t)o->dict_values, &values) < 0)
        return SPP_EINVAL;
    int64_t vcap = INT64_MAX;
    if (values && o->values_capacity >= 0) {
        uint8_t cap;
        if (read_u8(r, values + (uint64_t)o->values_capacity, &cap) < 0)
            return SPP_EINVAL;
        vcap = cap;
    }
    return keys_view(o, r, keys, values ? values + (uint64_t)o->values_items : 0, vcap, v);
}

/* Calls fn for each entry with a key and a value, CHUNK entries read at a
 * time; stops at the first non-zero answer and returns it (0 at the end,
 * SPP_EINVAL if the entries cannot be read or *budget runs out). */
typedef int (*entry_fn)(void *arg, uint64_t key, uint64_t value);

static int dict_each(const spp_reader *r, const dict_view *v, int64_t *budget, entry_fn fn,
                     void *arg)
{
    unsigned char buf[CHUNK * MAX_ENTRY_SIZE];
    uint64_t vals[CHUNK];
    for (int64_t i = 0; i < v->n; i += CHUNK) {
        size_t k = (size_t)(v->n - i < CHUNK ? v->n - i : CHUNK);
        if (*budget < (int64_t)k)
            return SPP_EINVAL;
        *budget -= (int64_t)k;
        if (spp_read(r, v->entries + (uint64_t)i * v->esize, buf, k * v->esize) < 0 ||
            (v->values && spp_read(r, v->values + (uint64_t)i * 8, vals, k * 8) < 0))
            return SPP_EINVAL;
        for (size_t j = 0; j < k; j++) {
            uint64_t key, value;
            memcpy(&key, buf + j * v->esize + v->esize - 16, 8);
            if (v->values)
                value = vals[j];
            else
                memcpy(&value, buf + j * v->esize + v->esize - 8, 8);
            if (!key || !value)
                continue; /* deleted, or not set in this object */
            int rc = fn(arg, key, value);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* Whether the object at addr is a str equal to want (ASCII). */
static int str_equals(const spp_pyoffsets *o, const spp_reader *r, const spp_pytypes *t,
                      uint64_t addr, const char *want)
{
    uint64_t type;
    uint32_t cps[64];
    int64_t length;
    size_t len = strlen(want);
    if (len > sizeof(cps) / sizeof(cps[0]) ||
        (t->str_type && (read_ptr(r, addr + (uint64_t)o->object_type, &type) < 0 ||
                         type != t->str_type)))
        return 0;
    int n = spp_read_str_chars(o, r, addr, cps, len, &length);
    if (n < 0 || length != (int64_t)len || (size_t)n != len)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (cps[i] != (unsigned char)want[i])
            return 0;
    return 1;
}

typedef struct lookup {
    const spp_pyoffsets *o;
    const spp_reader *r;
    const spp_pytypes *t;
    const char *key;
    uint64_t value;
} lookup;

/* What every lookup of one public call shares. */
typedef struct ctx {
    const spp_pyoffsets *o;
    const spp_reader *r;
    const spp_pytypes *t;
    int64_t budget;  /* entries that may still be looked at */
} ctx;

static int lookup_entry(void *arg, uint64_t key, uint64_t value)
{
    lookup *l = arg;
    if (!str_equals(l->o, l->r, l->t, key, l->key))
        return 0;
    l->value = value;
    return 1;
}

static int view_get(ctx *c, const dict_view *v, const char *key, uint64_t *value)
{
    lookup l = {c->o, c->r, c->t, key, 0};
    int rc = dict_each(c->r, v, &c->budget, lookup_entry, &l);
    if (rc == 1)
        *value = l.value;
    return rc;
}

static int dict_get(ctx *c, uint64_t dict, const char *key, uint64_t *value)
{
    dict_view v;
    int rc = dict_view_of(c->o, c->r, dict, &v);
    return rc < 0 ? rc : view_get(c, &v, key, value);
}

int spp_dict_get(const spp_pyoffsets *o, const spp_reader *r, const spp_pytypes *t, uint64_t dict,
                 const char *key, uint64_t *value)
{
    ctx c = {o, r, t, MAX_ENTRIES};
    return dict_get(&c, dict, key, value);
}

/* An attribute among values kept apart from a dict (3.11+ managed or
 * inline values), named by the type's shared keys. */
static int values_get(ctx *c, uint64_t type, uint64_t values, const char *name, uint64_t *value)
{
    const spp_pyoffsets *o = c->o;
    const spp_reader *r = c->r;
    uint64_t keys;
    int64_t vcap = INT64_MAX;
    dict_view v;
    if (o->type_cached_keys < 0 || read_ptr(r, type + (uint64_t)o->type_cached_keys, &keys) < 0)
        return SPP_EINVAL;
    if (o->values_capacity >= 0) {
        uint8_t cap;
        if (read_u8(r, values + (uint64_t)o->values_capacity, &cap) < 0)
            return SPP_EINVAL;
        vcap = cap;
    }
    int rc = keys_view(o, r, keys, values + (uint64_t)o->values_items, vcap, &v);
    return rc < 0 ? rc : view_get(c, &v, name, value);
}

static int object_attr(ctx *c, uint64_t obj, const char *name, uint64_t *value)
{
    const spp_pyoffsets *o = c->o;
    const spp_reader *r = c->r;
    uint64_t type, flags, dict = 0;
    if (!obj || o->type_flags < 0 || read_ptr(r, obj + (uint64_t)o->object_type, &type) < 0 ||
        !type || read_ptr(r, type + (uint64_t)o->type_flags, &flags) < 0)
        return SPP_EINVAL;
    if (o->flag_managed_dict && (flags & (uint64_t)o->flag_managed_dict) && o->managed_dict) {
        /* The pointers sit before the object (negative offsets). */
        uint64_t ptr, values = 0;
        if (read_ptr(r, obj + (uint64_t)(int64_t)o->managed_dict, &ptr) < 0)
            return SPP_EINVAL;
        switch (o->attr_model) {
        case SPP_ATTRS_VALUES:
            if (!o->managed_values ||
                read_ptr(r, obj + (uint64_t)(int64_t)o->managed_values, &values) < 0)
                return SPP_EINVAL;
            break;
        case SPP_ATTRS_TAGGED:
            /* 3.12's PyDictOrValues: the values are stored as their
             * address minus one (so odd), a dict as itself. */
            if (ptr & 1) {
                values = ptr + 1;
                ptr = 0;
            }
            break;
        case SPP_ATTRS_INLINE:
            /* Without a dict, the values follow the object's basic size
             * (and say whether they are in use). */
            if (!ptr && o->flag_inline_values && (flags & (uint64_t)o->flag_inline_values)) {
                int64_t basic;
                uint8_t valid;
                if (o->type_basicsize < 0 || o->values_valid < 0 ||
                    spp_read(r, type + (uint64_t)o->type_basicsize, &basic, sizeof(basic)) < 0 ||
                    basic < 16 || basic > MAX_BASICSIZE || (basic & 7) ||
                    read_u8(r, obj + (uint64_t)basic + (uint64_t)o->values_valid, &valid) < 0 ||
                    !valid)
                    return SPP_EINVAL;
                values = obj + (uint64_t)basic;
            }
            break;
        default:
            return SPP_EINVAL;
        }
        if (values)
            return values_get(c, type, values, name, value);
        dict = ptr;
    } else {
        int64_t off;
        /* A negative offset counts from the end of a variable-size object;
         * the objects read here are not. */
        if (o->type_dictoffset < 0 ||
            spp_read(r, type + (uint64_t)o->type_dictoffset, &off, sizeof(off)) < 0 || off <= 0 ||
            off > MAX_BASICSIZE || read_ptr(r, obj + (uint64_t)off, &dict) < 0)
            return SPP_EINVAL;
    }
    if (!dict)
        return 0; /* no attributes set */
    return dict_get(c, dict, name, value);
}

int spp_object_attr(const spp_pyoffsets *o, const spp_reader *r, const spp_pytypes *t,
                    uint64_t obj, const char *name, uint64_t *value)
{
    ctx c = {o, r, t, MAX_ENTRIES};
    return object_attr(&c, obj, name, value);
}

/* A thread ident: a non-negative int of at most 64 bits. */
static int read_ident(const spp_pyoffsets *o, const spp_reader *r, const spp_pytypes *t,
                      uint64_t obj, uint64_t *out)
{
    uint64_t type, ndigits;
    if (o->long_digits < 0 ||
        (t->int_type && (read_ptr(r, obj + (uint64_t)o->object_type, &type) < 0 ||
                         type != t->int_type)))
        return SPP_EINVAL;
    if (o->long_tag >= 0) {
        /* 3.12+: digit count << 3 | sign (0 positive, 1 zero, 2 negative). */
        uint64_t tag;
        if (read_ptr(r, obj + (uint64_t)o->long_tag, &tag) < 0 || (tag & 3) > 1)
            return SPP_EINVAL;
        ndigits = (tag & 3) == 1 ? 0 : tag >> 3;
    } else {
        int64_t size;
        if (spp_read(r, obj + (uint64_t)o->bytes_size, &size, sizeof(size)) < 0 || size < 0)
            return SPP_EINVAL;
        ndigits = (uint64_t)size;
    }
    unsigned shift = (unsigned)o->long_shift, dsize = (unsigned)o->long_digit_size;
    if ((dsize != 2 && dsize != 4) || shift < 8 || shift >= 8 * dsize ||
        ndigits > (64 + shift - 1) / shift)
        return SPP_EINVAL;
    unsigned char raw[8 * 4];
    if (ndigits && spp_read(r, obj + (uint64_t)o->long_digits, raw, ndigits * dsize) < 0)
        return SPP_EINVAL;
    uint64_t v = 0;
    for (uint64_t i = ndigits; i-- > 0;) {
        uint32_t d = 0;
        if (dsize == 4) {
            memcpy(&d, raw + i * 4, 4);
        } else {
            uint16_t h;
            memcpy(&h, raw + i * 2, 2);
            d = h;
        }
        if (v >> (64 - shift))
            return SPP_EINVAL; /* more than 64 bits */
        v = (v << shift) | (d & ((1u << shift) - 1));
    }
    *out = v;
    return SPP_OK;
}

typedef struct names {
    ctx *c;
    spp_thread_name *out;
    int cap, n;
} names;

/* One entry of _active: ident -> Thread. */
static int name_entry(void *arg, uint64_t key, uint64_t value)
{
    names *ns = arg;
    ctx *c = ns->c;
    if (ns->n >= ns->cap)
        return 1;
    spp_thread_name *tn = &ns->out[ns->n];
    uint64_t str, type;
    if (read_ident(c->o, c->r, c->t, key, &tn->ident) < 0 ||
        object_attr(c, value, "_name", &str) != 1 ||
        (c->t->str_type && (read_ptr(c->r, str + (uint64_t)c->o->object_type, &type) < 0 ||
                            type != c->t->str_type)) ||
        spp_read_str(c->o, c->r, str, tn->name, sizeof(tn->name)) <= 0)
        return 0;
    /* A name goes to a terminal and into files: no control characters. */
    for (char *c = tn->name; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    ns->n++;
    return 0;
}

int spp_thread_names(const spp_pyoffsets *o, const spp_reader *r, const spp_pytypes *t,
                     uint64_t runtime, spp_thread_name *out, int cap)
{
    uint64_t interp, modules, threading = 0, globals, active = 0;
    if (o->interp_modules < 0 || o->module_dict < 0 || o->dict_keys < 0)
        return SPP_ENOSYS;
    if (read_ptr(r, runtime + (uint64_t)o->runtime_interpreters_head, &interp) < 0 || !interp ||
        read_ptr(r, interp + (uint64_t)o->interp_modules, &modules) < 0 || !modules)
        return SPP_EINVAL;
    ctx c = {o, r, t, MAX_ENTRIES};
    int rc = dict_get(&c, modules, "threading", &threading);
    if (rc <= 0)
        return rc;
    if (read_ptr(r, threading + (uint64_t)o->module_dict, &globals) < 0)
        return SPP_EINVAL;
    rc = dict_get(&c, globals, "_active", &active);
    if (rc <= 0)
        return rc;
    dict_view v;
    if ((rc = dict_view_of(o, r, active, &v)) < 0)
        return rc;
    names ns = {&c, out, cap, 0};
    rc = dict_each(r, &v, &c.budget, name_entry, &ns);
    return rc < 0 ? rc : ns.n;
}
