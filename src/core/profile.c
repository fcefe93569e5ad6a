/* profile.c - the profile model: interned strings, frames, stack trie,
 * totals, and the optional timeline of runs. */
#include "profile.h"

#include <stdlib.h>
#include <string.h>

/* An open-addressing set of ids; the owner supplies hashing and equality so
 * one implementation serves strings, frames, stacks and threads. */
typedef struct idset {
    uint32_t *slots;  /* owned; SPP_NONE marks an empty slot */
    uint32_t cap;     /* power of two */
    uint32_t used;
} idset;

typedef struct string_rec {
    uint32_t off;  /* offset into the byte arena */
    uint32_t len;
} string_rec;

struct spp_profile {
    size_t limit;     /* bytes, 0 = unlimited */
    size_t used;      /* bytes held by the tables below */

    char *bytes;      /* owned string arena, each string NUL-terminated */
    size_t nbytes, capbytes;
    string_rec *strings;
    uint32_t nstrings, capstrings;
    idset string_set;

    spp_frame *frames;
    uint32_t nframes, capframes;
    idset frame_set;

    spp_stack *stacks;
    uint32_t nstacks, capstacks;
    idset stack_set;

    spp_thread *threads;
    uint32_t nthreads, capthreads;

    uint64_t samples, weight, dropped;

    /* The timeline has a budget of its own, set aside from the limit, so
     * that it never takes room the tables above need. */
    spp_run *runs;
    uint32_t nruns, capruns;
    int tl_on, tl_full;
    size_t tl_limit;  /* bytes, 0 = unbounded */
    size_t tl_used;   /* bytes held by runs (also counted in used) */
    uint64_t tl_left, tl_left_weight;

    spp_meta meta;    /* strings owned */
};

static uint64_t hash_bytes(const void *data, size_t len)
{
    /* FNV-1a, 64 bit: short keys, no adversary. */
    const unsigned char *s = data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Whether the tables may take add more bytes: the limit less what is set
 * aside for the timeline. */
static int fits(const spp_profile *p, size_t add)
{
    if (!p->limit)
        return 1;
    size_t tables = p->used - p->tl_used, room = p->limit - p->tl_limit;
    return tables <= room && add <= room - tables;
}

/* Grows *arr (of elem bytes each) so that it holds at least need elements,
 * charging the growth to the profile's memory budget. */
static int grow(spp_profile *p, void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return SPP_OK;
    if (need == SPP_NONE)
        return SPP_ENOMEM;
    uint64_t ncap = *cap ? (uint64_t)*cap * 2 : 64;
    while (ncap < need)
        ncap *= 2;
    if (ncap > SPP_NONE - 1)
        ncap = SPP_NONE - 1;
    size_t add = (size_t)(ncap - *cap) * elem;
    if (!fits(p, add))
        return SPP_ENOMEM;
    void *n = realloc(*arr, (size_t)ncap * elem);
    if (!n)
        return SPP_ENOMEM;
    *arr = n;
    *cap = (uint32_t)ncap;
    p->used += add;
    return SPP_OK;
}

typedef int (*idset_eq)(const spp_profile *p, uint32_t id, const void *key);
typedef uint64_t (*idset_hash_id)(const spp_profile *p, uint32_t id);

/* Returns the slot holding an id equal to key, or the empty slot where it
 * belongs. */
static uint32_t *idset_find(const spp_profile *p, const idset *s, uint64_t h,
                            idset_eq eq, const void *key)
{
    uint32_t mask = s->cap - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        uint32_t id = s->slots[i];
        if (id == SPP_NONE || eq(p, id, key))
            return &s->slots[i];
    }
}

/* Makes room for one more id, rehashing with hash_id. */
static int idset_reserve(spp_profile *p, idset *s, idset_hash_id hash_id)
{
    if (s->cap && (uint64_t)(s->used + 1) * 4 < (uint64_t)s->cap * 3)
        return SPP_OK;
    uint32_t ncap = s->cap ? s->cap * 2 : 256;
    size_t add = (size_t)(ncap - s->cap) * sizeof(uint32_t);
    if (!fits(p, add))
        return SPP_ENOMEM;
    uint32_t *slots = malloc((size_t)ncap * sizeof(uint32_t));
    if (!slots)
        return SPP_ENOMEM;
    memset(slots, 0xff, (size_t)ncap * sizeof(uint32_t));
    for (uint32_t i = 0; i < s->cap; i++) {
        uint32_t id = s->slots[i];
        if (id == SPP_NONE)
            continue;
        uint32_t j = (uint32_t)hash_id(p, id) & (ncap - 1);
        while (slots[j] != SPP_NONE)
            j = (j + 1) & (ncap - 1);
        slots[j] = id;
    }
    free(s->slots);
    s->slots = slots;
    s->cap = ncap;
    p->used += add;
    return SPP_OK;
}

/* Finds key, or makes room for it and returns the empty slot where it
 * belongs. Looking first means an existing key is found even when the
 * memory limit forbids the set to grow. Returns NULL when out of room. */
static uint32_t *idset_lookup(spp_profile *p, idset *s, uint64_t h, idset_eq eq, const void *key,
                              idset_hash_id hash_id)
{
    if (s->cap) {
        uint32_t *slot = idset_find(p, s, h, eq, key);
        if (*slot != SPP_NONE)
            return slot;
    }
    if (idset_reserve(p, s, hash_id) < 0)
        return NULL;
    return idset_find(p, s, h, eq, key);
}

spp_profile *spp_profile_new(size_t limit_bytes)
{
    spp_profile *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->limit = limit_bytes;
    p->used = sizeof(*p);
    return p;
}

void spp_profile_free(spp_profile *p)
{
    if (!p)
        return;
    free(p->bytes);
    free(p->strings);
    free(p->string_set.slots);
    free(p->frames);
    free(p->frame_set.slots);
    free(p->stacks);
    free(p->stack_set.slots);
    free(p->threads);
    free(p->runs);
    free((char *)p->meta.title);
    free((char *)p->meta.clock);
    free((char *)p->meta.mechanism);
    free(p);
}

/* ---- strings ---- */

typedef struct str_key {
    const char *s;
    size_t len;
} str_key;

static int string_eq(const spp_profile *p, uint32_t id, const void *key)
{
    const str_key *k = key;
    const string_rec *r = &p->strings[id];
    return r->len == k->len && memcmp(p->bytes + r->off, k->s, k->len) == 0;
}

static uint64_t string_hash_id(const spp_profile *p, uint32_t id)
{
    const string_rec *r = &p->strings[id];
    return hash_bytes(p->bytes + r->off, r->len);
}

uint32_t spp_profile_intern(spp_profile *p, const char *s, size_t len)
{
    if (len > UINT32_MAX / 2)
        return SPP_NONE;
    str_key key = {s, len};
    uint32_t *slot = idset_lookup(p, &p->string_set, hash_bytes(s, len), string_eq, &key,
                                  string_hash_id);
    if (!slot)
        return SPP_NONE;
    if (*slot != SPP_NONE)
        return *slot;
    if (p->nbytes + len + 1 > UINT32_MAX)
        return SPP_NONE;
    if (p->nbytes + len + 1 > p->capbytes) {
        size_t ncap = p->capbytes ? p->capbytes * 2 : 4096;
        while (ncap < p->nbytes + len + 1)
            ncap *= 2;
        if (!fits(p, ncap - p->capbytes))
            return SPP_NONE;
        char *n = realloc(p->bytes, ncap);
        if (!n)
            return SPP_NONE;
        p->used += ncap - p->capbytes;
        p->bytes = n;
        p->capbytes = ncap;
    }
    if (grow(p, (void **)&p->strings, &p->capstrings, p->nstrings + 1, sizeof(string_rec)) < 0)
        return SPP_NONE;
    uint32_t id = p->nstrings++;
    p->strings[id].off = (uint32_t)p->nbytes;
    p->strings[id].len = (uint32_t)len;
    if (len)
        memcpy(p->bytes + p->nbytes, s, len);
    p->bytes[p->nbytes + len] = '\0';
    p->nbytes += len + 1;
    *slot = id;
    p->string_set.used++;
    return id;
}

uint32_t spp_profile_intern_cstr(spp_profile *p, const char *s)
{
    return spp_profile_intern(p, s, strlen(s));
}

const char *spp_profile_string(const spp_profile *p, uint32_t id, size_t *len)
{
    if (id >= p->nstrings) {
        if (len)
            *len = 0;
        return "";
    }
    if (len)
        *len = p->strings[id].len;
    return p->bytes + p->strings[id].off;
}

/* ---- frames ---- */

static uint64_t frame_hash(const spp_frame *f)
{
    uint64_t h = mix64(((uint64_t)f->name << 32) ^ f->file);
    return mix64(h ^ ((uint64_t)(uint32_t)f->line << 32) ^ ((uint64_t)f->kind << 24) ^
                 (uint32_t)f->first_line);
}

static int frame_eq(const spp_profile *p, uint32_t id, const void *key)
{
    const spp_frame *a = &p->frames[id], *b = key;
    return a->name == b->name && a->file == b->file && a->line == b->line &&
           a->first_line == b->first_line && a->kind == b->kind;
}

static uint64_t frame_hash_id(const spp_profile *p, uint32_t id)
{
    return frame_hash(&p->frames[id]);
}

uint32_t spp_profile_frame(spp_profile *p, const spp_frame *f)
{
    uint32_t *slot = idset_lookup(p, &p->frame_set, frame_hash(f), frame_eq, f, frame_hash_id);
    if (!slot)
        return SPP_NONE;
    if (*slot != SPP_NONE)
        return *slot;
    if (grow(p, (void **)&p->frames, &p->capframes, p->nframes + 1, sizeof(spp_frame)) < 0)
        return SPP_NONE;
    uint32_t id = p->nframes++;
    p->frames[id] = *f;
    *slot = id;
    p->frame_set.used++;
    return id;
}

/* ---- stacks ---- */

typedef struct stack_key {
    uint32_t parent, frame;
} stack_key;

static uint64_t stack_hash(uint32_t parent, uint32_t frame)
{
    return mix64(((uint64_t)parent << 32) | frame);
}

static int stack_eq(const spp_profile *p, uint32_t id, const void *key)
{
    const stack_key *k = key;
    return p->stacks[id].parent == k->parent && p->stacks[id].frame == k->frame;
}

static uint64_t stack_hash_id(const spp_profile *p, uint32_t id)
{
    return stack_hash(p->stacks[id].parent, p->stacks[id].frame);
}

static uint32_t new_stack(spp_profile *p, uint32_t parent, uint32_t frame, uint32_t thread)
{
    if (grow(p, (void **)&p->stacks, &p->capstacks, p->nstacks + 1, sizeof(spp_stack)) < 0)
        return SPP_NONE;
    uint32_t id = p->nstacks++;
    spp_stack *s = &p->stacks[id];
    memset(s, 0, sizeof(*s));
    s->parent = parent;
    s->frame = frame;
    s->thread = thread;
    s->depth = parent == SPP_NONE ? 0 : p->stacks[parent].depth + 1;
    return id;
}

uint32_t spp_profile_push(spp_profile *p, uint32_t parent, uint32_t frame)
{
    if (parent >= p->nstacks || frame >= p->nframes)
        return SPP_NONE;
    stack_key key = {parent, frame};
    uint32_t *slot = idset_lookup(p, &p->stack_set, stack_hash(parent, frame), stack_eq, &key,
                                  stack_hash_id);
    if (!slot)
        return SPP_NONE;
    if (*slot != SPP_NONE)
        return *slot;
    uint32_t id = new_stack(p, parent, frame, p->stacks[parent].thread);
    if (id == SPP_NONE)
        return SPP_NONE;
    *slot = id;
    p->stack_set.used++;
    return id;
}

/* ---- threads ---- */

uint32_t spp_profile_thread(spp_profile *p, uint64_t tid, const char *name)
{
    uint32_t i;
    /* Threads are few (hundreds at most); a linear scan from the newest is
     * cheap next to everything else a sample costs, and callers cache. */
    for (i = p->nthreads; i-- > 0;)
        if (p->threads[i].tid == tid)
            break;
    if (i == UINT32_MAX) {
        if (grow(p, (void **)&p->threads, &p->capthreads, p->nthreads + 1, sizeof(spp_thread)) < 0)
            return SPP_NONE;
        i = p->nthreads;
        uint32_t root = new_stack(p, SPP_NONE, SPP_NONE, i);
        if (root == SPP_NONE)
            return SPP_NONE;
        memset(&p->threads[i], 0, sizeof(spp_thread));
        p->threads[i].tid = tid;
        p->threads[i].name = SPP_NONE;
        p->threads[i].root = root;
        p->threads[i].last_run = SPP_NONE;
        p->nthreads++;
    }
    if (name) {
        uint32_t s = spp_profile_intern_cstr(p, name);
        if (s != SPP_NONE)
            p->threads[i].name = s;
    }
    return i;
}

/* ---- timeline ---- */

int spp_profile_keep_timeline(spp_profile *p, size_t max_bytes)
{
    if (p->tl_on)
        return SPP_OK;
    if (p->limit && (max_bytes == 0 || max_bytes > p->limit || p->used > p->limit - max_bytes))
        return SPP_EINVAL;
    p->tl_on = 1;
    p->tl_limit = max_bytes;
    return SPP_OK;
}

/* Room for one more run within the timeline's budget. */
static int timeline_grow(spp_profile *p)
{
    if (p->nruns < p->capruns)
        return SPP_OK;
    uint64_t ncap = p->capruns ? (uint64_t)p->capruns * 2 : 256;
    if (p->tl_limit && ncap * sizeof(spp_run) > p->tl_limit)
        ncap = p->tl_limit / sizeof(spp_run);
    if (ncap > SPP_NONE - 1)
        ncap = SPP_NONE - 1;
    if (ncap <= p->capruns)
        return SPP_ENOMEM;
    spp_run *n = realloc(p->runs, (size_t)ncap * sizeof(spp_run));
    if (!n)
        return SPP_ENOMEM;
    size_t add = (size_t)(ncap - p->capruns) * sizeof(spp_run);
    p->runs = n;
    p->capruns = (uint32_t)ncap;
    p->tl_used += add;
    p->used += add;
    return SPP_OK;
}

static void timeline_add(spp_profile *p, spp_thread *t, uint32_t stack, uint64_t weight_ns,
                         uint64_t time_ns)
{
    if (p->tl_full) {
        p->tl_left++;
        p->tl_left_weight += weight_ns;
        return;
    }
    spp_run *last = t->last_run != SPP_NONE ? &p->runs[t->last_run] : NULL;
    /* A thread's samples come in time order; a clock step back is read as
     * no time passing, which keeps the thread's runs ordered. */
    if (last && time_ns < last->end_ns)
        time_ns = last->end_ns;
    uint64_t begin = time_ns > weight_ns ? time_ns - weight_ns : 0;
    /* The thread ran on since its last sample unless it was off for longer
     * than it ran (a CPU clock's sample stands for less than the wall time
     * between samples when the thread waits or is not scheduled). */
    int continued = last && begin <= last->end_ns + weight_ns;
    if (continued && last->stack == stack && last->count < UINT32_MAX) {
        last->end_ns = time_ns;
        last->count++;
        last->weight_ns += weight_ns;
        return;
    }
    uint64_t last_end = last ? last->end_ns : 0; /* growing moves the runs */
    if (timeline_grow(p) < 0) {
        /* Stop here rather than leave holes: what is kept stays a true
         * prefix of the profile in time. */
        p->tl_full = 1;
        p->tl_left++;
        p->tl_left_weight += weight_ns;
        return;
    }
    uint32_t i = p->nruns++;
    spp_run *r = &p->runs[i];
    r->start_ns = continued ? last_end : begin;
    r->end_ns = time_ns;
    r->weight_ns = weight_ns;
    r->stack = stack;
    r->count = 1;
    t->last_run = i;
}

int spp_profile_timeline_kept(const spp_profile *p) { return p->tl_on; }
uint32_t spp_profile_nruns(const spp_profile *p) { return p->nruns; }
const spp_run *spp_profile_run_at(const spp_profile *p, uint32_t i)
{
    return i < p->nruns ? &p->runs[i] : NULL;
}

uint64_t spp_profile_timeline_left_out(const spp_profile *p, uint64_t *weight_ns)
{
    if (weight_ns)
        *weight_ns = p->tl_on ? p->tl_left_weight : p->weight;
    return p->tl_on ? p->tl_left : p->samples;
}

void spp_profile_add(spp_profile *p, uint32_t stack, uint64_t weight_ns, uint64_t time_ns)
{
    if (stack >= p->nstacks) {
        p->dropped++;
        return;
    }
    spp_stack *s = &p->stacks[stack];
    s->self_count++;
    s->self_weight += weight_ns;
    spp_thread *t = &p->threads[s->thread];
    if (!t->samples || time_ns < t->first_ns)
        t->first_ns = time_ns;
    if (time_ns > t->last_ns)
        t->last_ns = time_ns;
    t->samples++;
    t->weight += weight_ns;
    p->samples++;
    p->weight += weight_ns;
    if (p->tl_on)
        timeline_add(p, t, stack, weight_ns, time_ns);
}

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

void spp_profile_add_many(spp_profile *p, uint32_t stack, uint64_t count, uint64_t weight_ns)
{
    if (stack >= p->nstacks) {
        p->dropped = sat_add(p->dropped, count);
        return;
    }
    spp_stack *s = &p->stacks[stack];
    spp_thread *t = &p->threads[s->thread];
    s->self_count = sat_add(s->self_count, count);
    s->self_weight = sat_add(s->self_weight, weight_ns);
    t->samples = sat_add(t->samples, count);
    t->weight = sat_add(t->weight, weight_ns);
    p->samples = sat_add(p->samples, count);
    p->weight = sat_add(p->weight, weight_ns);
}

void spp_profile_drop(spp_profile *p, uint64_t n) { p->dropped += n; }

uint32_t spp_profile_nthreads(const spp_profile *p) { return p->nthreads; }
const spp_thread *spp_profile_thread_at(const spp_profile *p, uint32_t i)
{
    return i < p->nthreads ? &p->threads[i] : NULL;
}
uint32_t spp_profile_nframes(const spp_profile *p) { return p->nframes; }
const spp_frame *spp_profile_frame_at(const spp_profile *p, uint32_t id)
{
    return id < p->nframes ? &p->frames[id] : NULL;
}
uint32_t spp_profile_nstacks(const spp_profile *p) { return p->nstacks; }
const spp_stack *spp_profile_stack_at(const spp_profile *p, uint32_t id)
{
    return id < p->nstacks ? &p->stacks[id] : NULL;
}
uint64_t spp_profile_samples(const spp_profile *p) { return p->samples; }
uint64_t spp_profile_weight(const spp_profile *p) { return p->weight; }
uint64_t spp_profile_dropped(const spp_profile *p) { return p->dropped; }
size_t spp_profile_memory(const spp_profile *p) { return p->used; }

uint32_t spp_profile_unwind(const spp_profile *p, uint32_t stack, uint32_t *out, uint32_t cap)
{
    if (stack >= p->nstacks)
        return 0;
    uint32_t depth = p->stacks[stack].depth;
    uint32_t n = depth < cap ? depth : cap;
    /* Walk leaf to root, keeping the root-most n frames in root-first order. */
    uint32_t i = depth;
    for (uint32_t s = stack; s != SPP_NONE && p->stacks[s].frame != SPP_NONE; s = p->stacks[s].parent) {
        i--;
        if (i < n)
            out[i] = p->stacks[s].frame;
    }
    return n;
}

/* Copies before freeing: src may be the string *dst holds (setting a
 * profile's meta from a copy of its own). */
static int dup_str(const char **dst, const char *src)
{
    char *c = NULL;
    if (src) {
        size_t n = strlen(src) + 1;
        c = malloc(n);
        if (!c) {
            free((char *)*dst);
            *dst = NULL;
            return SPP_ENOMEM;
        }
        memcpy(c, src, n);
    }
    free((char *)*dst);
    *dst = c;
    return SPP_OK;
}

int spp_profile_set_meta(spp_profile *p, const spp_meta *m)
{
    p->meta.interval_ms = m->interval_ms;
    p->meta.start_ns = m->start_ns;
    p->meta.end_ns = m->end_ns;
    p->meta.pid = m->pid;
    if (dup_str(&p->meta.title, m->title) < 0 || dup_str(&p->meta.clock, m->clock) < 0 ||
        dup_str(&p->meta.mechanism, m->mechanism) < 0)
        return SPP_ENOMEM;
    return SPP_OK;
}

const spp_meta *spp_profile_meta(const spp_profile *p) { return &p->meta; }

/* ---- windows ---- */

struct spp_mark {
    uint64_t *count;   /* owned: each stack's self_count when last advanced */
    uint64_t *weight;  /* owned: its self_weight then */
    uint32_t n;        /* stacks covered; newer ones start from zero */
    uint64_t dropped;
};

spp_mark *spp_mark_new(void) { return calloc(1, sizeof(spp_mark)); }

void spp_mark_free(spp_mark *m)
{
    if (!m)
        return;
    free(m->count);
    free(m->weight);
    free(m);
}

/* The id in dst of the string id of src; SPP_NONE stays SPP_NONE. */
static uint32_t copy_string(spp_profile *dst, const spp_profile *src, uint32_t id, int *failed)
{
    if (id == SPP_NONE)
        return SPP_NONE;
    size_t len;
    const char *s = spp_profile_string(src, id, &len);
    uint32_t r = spp_profile_intern(dst, s, len);
    if (r == SPP_NONE)
        *failed = 1;
    return r;
}

/* The stack of dst standing for stack s of src, created with its callers
 * as needed; map caches src stack -> dst stack (SPP_NONE: not yet).
 * The walk up ends at a mapped stack or a thread root. */
static uint32_t copy_stack(spp_profile *dst, const spp_profile *src, uint32_t s, uint32_t *map)
{
    uint32_t chain[64];
    if (map[s] == SPP_NONE) {
        /* The unmapped stacks on the way to the root, 64 at most. */
        uint32_t n = 0, top = s;
        while (map[top] == SPP_NONE && src->stacks[top].parent != SPP_NONE && n < 64) {
            chain[n++] = top;
            top = src->stacks[top].parent;
        }
        if (map[top] == SPP_NONE && src->stacks[top].parent == SPP_NONE) {
            const spp_thread *t = &src->threads[src->stacks[top].thread];
            uint32_t ti = spp_profile_thread(dst, t->tid, NULL);
            if (ti == SPP_NONE)
                return SPP_NONE;
            if (t->name != SPP_NONE && dst->threads[ti].name == SPP_NONE) {
                int failed = 0;
                dst->threads[ti].name = copy_string(dst, src, t->name, &failed);
            }
            map[top] = dst->threads[ti].root;
        }
        /* 64 unmapped stacks below top: map the part above first (depth
         * is bounded by the callers' caps, so this recursion is shallow). */
        if (map[top] == SPP_NONE && copy_stack(dst, src, top, map) == SPP_NONE)
            return SPP_NONE;
        uint32_t at = map[top];
        while (n-- > 0) {
            const spp_frame *f = &src->frames[src->stacks[chain[n]].frame];
            int failed = 0;
            spp_frame c = *f;
            c.name = copy_string(dst, src, f->name, &failed);
            c.file = copy_string(dst, src, f->file, &failed);
            uint32_t fid = failed ? SPP_NONE : spp_profile_frame(dst, &c);
            at = fid == SPP_NONE ? SPP_NONE : spp_profile_push(dst, at, fid);
            if (at == SPP_NONE)
                return SPP_NONE;
            map[chain[n]] = at;
        }
    }
    return map[s];
}

spp_profile *spp_profile_take_window(const spp_profile *p, spp_mark *m, uint64_t *samples)
{
    uint32_t n = p->nstacks;
    spp_profile *w = spp_profile_new(0);
    uint32_t *map = malloc(((size_t)n + 1) * sizeof(uint32_t));
    uint64_t *count = realloc(m->count, ((size_t)n + 1) * sizeof(uint64_t));
    if (count)
        m->count = count;
    uint64_t *weight = realloc(m->weight, ((size_t)n + 1) * sizeof(uint64_t));
    if (weight)
        m->weight = weight;
    if (!w || !map || !count || !weight || spp_profile_set_meta(w, &p->meta) < 0)
        goto fail;
    memset(map, 0xff, (size_t)n * sizeof(uint32_t));
    for (uint32_t i = m->n; i < n; i++)
        count[i] = weight[i] = 0;
    uint64_t total = 0;
    for (uint32_t s = 0; s < n; s++) {
        const spp_stack *st = &p->stacks[s];
        if (st->self_count <= count[s])
            continue;
        uint32_t d = copy_stack(w, p, s, map);
        if (d == SPP_NONE)
            goto fail;
        uint64_t dc = st->self_count - count[s], dw = st->self_weight - weight[s];
        const spp_thread *src_t = &p->threads[st->thread];
        spp_stack *ds = &w->stacks[d];
        spp_thread *t = &w->threads[ds->thread];
        ds->self_count += dc;
        ds->self_weight += dw;
        t->first_ns = t->last_ns = src_t->last_ns;
        t->samples += dc;
        t->weight += dw;
        w->samples += dc;
        w->weight += dw;
        total += dc;
    }
    w->dropped = p->dropped - m->dropped;
    /* Only now, with the window complete, does the mark move. */
    for (uint32_t s = 0; s < n; s++) {
        count[s] = p->stacks[s].self_count;
        weight[s] = p->stacks[s].self_weight;
    }
    m->n = n;
    m->dropped = p->dropped;
    free(map);
    if (samples)
        *samples = total;
    return w;
fail:
    free(map);
    spp_profile_free(w);
    return NULL;
}
