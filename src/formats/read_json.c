/* read_json.c - reading speedscope files and Chrome traces back into a
 * profile: speedscope's sampled profiles (stacks and weights) and evented
 * ones; a trace's nested complete ("X") events, each event's own time (its
 * sampled time, or its duration, less its children's) put on its stack. */
#include "read.h"

#include "json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define READ_MAX_EVENTS ((size_t)1 << 26)

static uint64_t to_ns(double v, double scale)
{
    double ns = v * scale;
    if (!(ns > 0))       /* negative, zero or NaN */
        return 0;
    if (ns >= 1.8e19)
        return UINT64_MAX;
    return (uint64_t)llround(ns);
}

/* A JSON string member, or NULL/0. */
static const char *str_member(const spp_json *j, const spp_json_value *obj, const char *key, size_t *len)
{
    *len = 0;
    return spp_json_string(j, spp_json_member(j, obj, key), len);
}

/* ---- speedscope ---- */

static double unit_scale(const char *unit)
{
    if (!unit)
        return 1;
    if (strcmp(unit, "nanoseconds") == 0)
        return 1;
    if (strcmp(unit, "microseconds") == 0)
        return 1e3;
    if (strcmp(unit, "milliseconds") == 0)
        return 1e6;
    if (strcmp(unit, "seconds") == 0)
        return 1e9;
    return 1; /* "none", "bytes": taken as they are */
}

/* The shared frame table: speedscope frame index -> profile frame. */
static int speedscope_frames(const spp_json *j, const spp_json_value *frames, spp_profile *p,
                             uint32_t **out, uint32_t *n, char *err, size_t errlen)
{
    uint32_t count = frames && frames->type == SPP_JSON_ARRAY ? frames->u.kids.count : 0;
    if (!frames || frames->type != SPP_JSON_ARRAY)
        return spp_read_fail(err, errlen, "speedscope: no shared.frames array");
    uint32_t *map = malloc((count ? count : 1) * sizeof(uint32_t));
    if (!map)
        return SPP_ENOMEM;
    uint32_t i = 0;
    for (const spp_json_value *f = spp_json_first(j, frames); f; f = spp_json_next(j, f), i++) {
        size_t nlen, flen;
        const char *name = str_member(j, f, "name", &nlen);
        const char *file = str_member(j, f, "file", &flen);
        double line = 0;
        if (!name) {
            free(map);
            return spp_read_fail(err, errlen, "speedscope: frame %u has no name", i);
        }
        if (!spp_json_number(spp_json_member(j, f, "line"), &line) || !(line >= 0 && line < 1e9))
            line = 0;
        map[i] = spp_read_frame(p, name, nlen, file, flen, (int)line);
        if (map[i] == SPP_NONE) {
            free(map);
            return SPP_ENOMEM;
        }
    }
    *out = map;
    *n = count;
    return SPP_OK;
}

static int speedscope_sampled(const spp_json *j, const spp_json_value *prof, spp_profile *p, uint32_t root,
                              const uint32_t *map, uint32_t nframes, double scale, char *err, size_t errlen)
{
    const spp_json_value *samples = spp_json_member(j, prof, "samples");
    const spp_json_value *weights = spp_json_member(j, prof, "weights");
    if (!samples || samples->type != SPP_JSON_ARRAY || !weights || weights->type != SPP_JSON_ARRAY ||
        samples->u.kids.count != weights->u.kids.count)
        return spp_read_fail(err, errlen, "speedscope: a sampled profile needs samples and weights of one length");
    const spp_json_value *w = spp_json_first(j, weights);
    for (const spp_json_value *s = spp_json_first(j, samples); s; s = spp_json_next(j, s), w = spp_json_next(j, w)) {
        double weight;
        if (s->type != SPP_JSON_ARRAY || !spp_json_number(w, &weight))
            return spp_read_fail(err, errlen, "speedscope: a sample is not an array of frame indices with a weight");
        if (s->u.kids.count > SPP_READ_MAX_DEPTH)
            return spp_read_fail(err, errlen, "speedscope: a stack deeper than %d frames", SPP_READ_MAX_DEPTH);
        uint32_t node = root;
        for (const spp_json_value *f = spp_json_first(j, s); f; f = spp_json_next(j, f)) {
            double idx;
            if (!spp_json_number(f, &idx) || !(idx >= 0 && idx < nframes) || idx != floor(idx))
                return spp_read_fail(err, errlen, "speedscope: a frame index out of range");
            if ((node = spp_profile_push(p, node, map[(uint32_t)idx])) == SPP_NONE)
                return SPP_ENOMEM;
        }
        spp_profile_add_many(p, node, 0, to_ns(weight, scale));
    }
    return SPP_OK;
}

/* Open ("O") and close ("C") events at times "at": the time between two
 * events goes to the stack open meanwhile. */
static int speedscope_evented(const spp_json *j, const spp_json_value *prof, spp_profile *p, uint32_t root,
                              const uint32_t *map, uint32_t nframes, double scale, char *err, size_t errlen)
{
    const spp_json_value *events = spp_json_member(j, prof, "events");
    if (!events || events->type != SPP_JSON_ARRAY)
        return spp_read_fail(err, errlen, "speedscope: an evented profile needs events");
    uint32_t *stack = malloc((SPP_READ_MAX_DEPTH + 1) * sizeof(uint32_t));
    if (!stack)
        return SPP_ENOMEM;
    uint32_t depth = 0;
    stack[0] = root;
    double last = 0;
    int rc = SPP_OK, first = 1;
    for (const spp_json_value *e = spp_json_first(j, events); e; e = spp_json_next(j, e)) {
        size_t tlen;
        const char *type = str_member(j, e, "type", &tlen);
        double at, idx;
        if (!type || tlen != 1 || (type[0] != 'O' && type[0] != 'C') ||
            !spp_json_number(spp_json_member(j, e, "at"), &at) ||
            !spp_json_number(spp_json_member(j, e, "frame"), &idx) || !(idx >= 0 && idx < nframes)) {
            rc = spp_read_fail(err, errlen, "speedscope: a bad event (type O or C, frame, at)");
            break;
        }
        if (!first && at > last && depth)
            spp_profile_add_many(p, stack[depth], 0, to_ns(at - last, scale));
        first = 0;
        last = at;
        if (type[0] == 'O') {
            if (depth == SPP_READ_MAX_DEPTH) {
                rc = spp_read_fail(err, errlen, "speedscope: a stack deeper than %d frames", SPP_READ_MAX_DEPTH);
                break;
            }
            uint32_t node = spp_profile_push(p, stack[depth], map[(uint32_t)idx]);
            if (node == SPP_NONE) {
                rc = SPP_ENOMEM;
                break;
            }
            stack[++depth] = node;
        } else if (depth) {
            depth--;
        }
    }
    free(stack);
    return rc;
}

/* The profile thread for key: a file may name at most SPP_READ_MAX_THREADS
 * (the model looks threads up one by one, so a hostile file naming a
 * million would take hours). SPP_NONE when out of memory or over. */
static uint32_t read_thread(spp_profile *p, uint64_t key)
{
    uint32_t n = spp_profile_nthreads(p);
    if (n >= SPP_READ_MAX_THREADS) {
        for (uint32_t t = 0; t < n; t++)
            if (spp_profile_thread_at(p, t)->tid == key)
                return t;
        return SPP_NONE;
    }
    return spp_profile_thread(p, key, NULL);
}

static int read_speedscope(const spp_json *j, const spp_json_value *root, spp_profile *p, char *err,
                           size_t errlen)
{
    uint32_t *map = NULL, nframes = 0;
    int rc = speedscope_frames(j, spp_json_member(j, spp_json_member(j, root, "shared"), "frames"), p, &map,
                               &nframes, err, errlen);
    if (rc < 0)
        return rc;
    const spp_json_value *profiles = spp_json_member(j, root, "profiles");
    if (!profiles || profiles->type != SPP_JSON_ARRAY)
        rc = spp_read_fail(err, errlen, "speedscope: no profiles array");
    uint64_t index = 0;
    for (const spp_json_value *prof = spp_json_first(j, profiles); prof && rc == SPP_OK;
         prof = spp_json_next(j, prof), index++) {
        size_t n;
        const char *type = str_member(j, prof, "type", &n);
        const char *unit = str_member(j, prof, "unit", &n);
        uint32_t t = read_thread(p, index);
        if (t == SPP_NONE) {
            rc = spp_read_fail(err, errlen, "speedscope: more than %d profiles, or out of memory",
                               SPP_READ_MAX_THREADS);
            break;
        }
        uint32_t troot = spp_profile_thread_at(p, t)->root;
        double scale = unit_scale(unit);
        if (type && strcmp(type, "sampled") == 0)
            rc = speedscope_sampled(j, prof, p, troot, map, nframes, scale, err, errlen);
        else if (type && strcmp(type, "evented") == 0)
            rc = speedscope_evented(j, prof, p, troot, map, nframes, scale, err, errlen);
        else
            rc = spp_read_fail(err, errlen, "speedscope: a profile of unknown type");
    }
    free(map);
    return rc;
}

/* ---- Chrome traces ---- */

typedef struct trace_ev {
    uint64_t key;        /* pid and tid */
    uint64_t start, end; /* ns */
    uint64_t weight;     /* ns: sampled time, or the duration */
    uint32_t frame;
    uint32_t order;      /* in the file: parents come first at one start */
} trace_ev;

static int cmp_ev(const void *a, const void *b)
{
    const trace_ev *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    if (x->end != y->end)
        return x->end > y->end ? -1 : 1; /* the longer one encloses the other */
    return x->order < y->order ? -1 : x->order > y->order;
}

typedef struct open_ev {
    uint64_t end, weight, children;
    uint32_t node;
} open_ev;

/* Rebuilds each thread's stacks from its events, sorted by start: an event
 * lies inside the open ones that span it, and what its children do not
 * account for is its own. */
static int trace_stacks(spp_profile *p, trace_ev *ev, size_t n)
{
    open_ev *open = malloc((SPP_READ_MAX_DEPTH + 1) * sizeof(open_ev));
    if (!open)
        return SPP_ENOMEM;
    uint32_t depth = 0;
    uint64_t key = 0;
    int rc = SPP_OK;
    for (size_t i = 0; i <= n && rc == SPP_OK; i++) {
        int new_thread = i == n || i == 0 || ev[i].key != key;
        /* Close what ends before this event begins (everything, at a new
         * thread), crediting each to its parent. */
        while (depth && (new_thread || open[depth].end <= ev[i].start || ev[i].end > open[depth].end)) {
            open_ev *o = &open[depth--];
            uint64_t own = o->weight > o->children ? o->weight - o->children : 0;
            spp_profile_add_many(p, o->node, 0, own);
            if (depth)
                open[depth].children += o->weight;
        }
        if (i == n)
            break;
        if (new_thread) {
            key = ev[i].key;
            uint32_t t = read_thread(p, key);
            if (t == SPP_NONE) {
                rc = SPP_ENOMEM;
                break;
            }
            open[0].node = spp_profile_thread_at(p, t)->root;
        }
        if (depth == SPP_READ_MAX_DEPTH)
            continue; /* deeper frames' time stays with the deepest kept */
        uint32_t node = spp_profile_push(p, open[depth].node, ev[i].frame);
        if (node == SPP_NONE) {
            rc = SPP_ENOMEM;
            break;
        }
        open[++depth] = (open_ev){ev[i].end, ev[i].weight, 0, node};
    }
    free(open);
    return rc;
}

static int read_chrometrace(const spp_json *j, const spp_json_value *events, spp_profile *p, char *err,
                            size_t errlen)
{
    size_t cap = events->u.kids.count, n = 0;
    if (cap > READ_MAX_EVENTS)
        return spp_read_fail(err, errlen, "chrometrace: more than %zu events", READ_MAX_EVENTS);
    trace_ev *ev = malloc((cap ? cap : 1) * sizeof(trace_ev));
    if (!ev)
        return SPP_ENOMEM;
    int rc = SPP_OK;
    for (const spp_json_value *e = spp_json_first(j, events); e; e = spp_json_next(j, e)) {
        size_t len, nlen, flen;
        const char *ph = str_member(j, e, "ph", &len);
        if (!ph || len != 1 || ph[0] != 'X')
            continue; /* metadata, instant events...: no time on a stack */
        double ts, dur, pid = 0, tid = 0, line = 0, sampled;
        const char *name = str_member(j, e, "name", &nlen);
        if (!name || !spp_json_number(spp_json_member(j, e, "ts"), &ts) ||
            !spp_json_number(spp_json_member(j, e, "dur"), &dur) || !(ts >= 0 && ts < 1e15) ||
            !(dur >= 0 && dur < 1e15)) {
            rc = spp_read_fail(err, errlen, "chrometrace: an X event without name, ts and dur");
            break;
        }
        spp_json_number(spp_json_member(j, e, "pid"), &pid);
        spp_json_number(spp_json_member(j, e, "tid"), &tid);
        const spp_json_value *args = spp_json_member(j, e, "args");
        const char *file = str_member(j, args, "file", &flen);
        if (!spp_json_number(spp_json_member(j, args, "line"), &line) || !(line >= 0 && line < 1e9))
            line = 0;
        trace_ev *t = &ev[n];
        t->key = (uint64_t)(fabs(pid) < 4e9 ? (uint32_t)fabs(pid) : 0) << 32 |
                 (fabs(tid) < 4e9 ? (uint32_t)fabs(tid) : 0);
        t->start = to_ns(ts, 1e3);
        t->end = t->start + to_ns(dur, 1e3);
        /* spprof's own traces say how much sampled time each event holds
         * (less than its duration where the thread did not run). */
        t->weight = spp_json_number(spp_json_member(j, args, "sampled_ms"), &sampled) ? to_ns(sampled, 1e6)
                                                                                      : t->end - t->start;
        t->frame = spp_read_frame(p, name, nlen, file, flen, (int)line);
        t->order = (uint32_t)n;
        if (t->frame == SPP_NONE) {
            rc = SPP_ENOMEM;
            break;
        }
        n++;
    }
    if (rc == SPP_OK && !n)
        rc = spp_read_fail(err, errlen, "chrometrace: no complete (X) events");
    if (rc == SPP_OK) {
        qsort(ev, n, sizeof(trace_ev), cmp_ev);
        rc = trace_stacks(p, ev, n);
        if (rc == SPP_ENOMEM)
            rc = spp_read_fail(err, errlen, "chrometrace: more than %d threads, or out of memory",
                               SPP_READ_MAX_THREADS);
    }
    free(ev);
    return rc;
}

int spp_read_json(const char *data, size_t len, spp_profile *p, const char **format, char *err,
                  size_t errlen)
{
    spp_json *j;
    size_t at;
    const char *why;
    int rc = spp_json_parse(data, len, &j, &at, &why);
    if (rc == SPP_EINVAL)
        return spp_read_fail(err, errlen, "malformed JSON at byte %zu: %s", at, why);
    if (rc < 0)
        return rc;
    const spp_json_value *root = spp_json_root(j);
    const spp_json_value *events = root->type == SPP_JSON_ARRAY ? root : spp_json_member(j, root, "traceEvents");
    if (spp_json_member(j, root, "profiles") && spp_json_member(j, root, "shared")) {
        *format = "speedscope";
        rc = read_speedscope(j, root, p, err, errlen);
    } else if (events && events->type == SPP_JSON_ARRAY) {
        *format = "chrometrace";
        rc = read_chrometrace(j, events, p, err, errlen);
    } else {
        rc = spp_read_fail(err, errlen, "JSON, but neither a speedscope file nor a Chrome trace");
    }
    spp_json_free(j);
    return rc;
}
