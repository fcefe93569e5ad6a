/* profile.h - the profile model shared by every front end and every writer.
 *
 * A profile is a set of interned strings, interned frames (function, file,
 * line), a stack trie whose nodes are (parent stack, frame) pairs rooted at one
 * node per thread, and per-node totals (samples and weight in nanoseconds).
 * Memory grows with the number of distinct stacks, never with duration,
 * except for the optional timeline: the samples in time order, consecutive
 * samples of a thread on one stack coalesced into one run, within a byte
 * budget of its own (spp_profile_keep_timeline).
 *
 * Nothing here is async-signal-safe, nothing is thread-safe: one owner at a
 * time (the drain thread while profiling, then the writers). Functions return
 * 0 or a negative SPP_E* code; the library never prints.
 */
#ifndef SPP_PROFILE_H
#define SPP_PROFILE_H

#include <stddef.h>
#include <stdint.h>

#define SPP_OK 0
#define SPP_ENOMEM (-1)   /* allocation failed or the memory limit is reached */
#define SPP_EINVAL (-2)   /* bad argument */
#define SPP_EIO (-3)      /* writing a file failed; errno says why */
#define SPP_ENOSYS (-4)   /* not available on this system */

#define SPP_NONE UINT32_MAX

/* What a frame stands for. */
enum spp_frame_kind {
    SPP_FRAME_PYTHON = 0,
    SPP_FRAME_NATIVE = 1,
    SPP_FRAME_THREAD = 2,  /* a pseudo-frame naming a thread (optional root) */
    SPP_FRAME_OTHER = 3,   /* "<truncated>" and similar markers */
};

typedef struct spp_frame {
    uint32_t name;       /* string id of the function name */
    uint32_t file;       /* string id of the file (or shared object) */
    int32_t line;        /* executing line, 0 if unknown */
    int32_t first_line;  /* first line of the function, 0 if unknown */
    uint32_t kind;       /* enum spp_frame_kind */
} spp_frame;

typedef struct spp_stack {
    uint32_t parent;     /* parent stack id, SPP_NONE for a thread root */
    uint32_t frame;      /* frame id, SPP_NONE for a thread root */
    uint32_t thread;     /* index of the thread this stack belongs to */
    uint32_t depth;      /* number of frames from the root (root = 0) */
    uint64_t self_count; /* samples whose innermost frame is this node */
    uint64_t self_weight;/* nanoseconds those samples stand for */
} spp_stack;

typedef struct spp_thread {
    uint64_t tid;        /* OS thread id (or pid for per-process roots) */
    uint32_t name;       /* string id, SPP_NONE if unnamed */
    uint32_t root;       /* stack id of the thread's root node */
    uint64_t samples;    /* samples attributed to this thread */
    uint64_t weight;     /* nanoseconds attributed to this thread */
    uint64_t first_ns;   /* time of the first sample (CLOCK_REALTIME ns) */
    uint64_t last_ns;    /* time of the last sample */
    uint32_t last_run;   /* index of the thread's newest timeline run, SPP_NONE if none */
} spp_thread;

/* A run of the timeline: samples of one thread, consecutive in time, on one
 * stack. It spans [start_ns, end_ns] of CLOCK_REALTIME: from the beginning of
 * the interval its first sample stands for (or from the end of the thread's
 * previous run, when the thread ran without a gap) to its last sample. */
typedef struct spp_run {
    uint64_t start_ns;
    uint64_t end_ns;
    uint64_t weight_ns;  /* what its samples stand for */
    uint32_t stack;      /* stack id (its thread is the stack's) */
    uint32_t count;      /* samples */
} spp_run;

typedef struct spp_profile spp_profile;

/* Creates an empty profile whose tables may use at most limit_bytes
 * (0 = unlimited). Returns NULL when out of memory. */
spp_profile *spp_profile_new(size_t limit_bytes);
void spp_profile_free(spp_profile *p);   /* NULL is a no-op */

/* Interns len bytes; returns a string id or SPP_NONE when out of memory. */
uint32_t spp_profile_intern(spp_profile *p, const char *s, size_t len);
uint32_t spp_profile_intern_cstr(spp_profile *p, const char *s);
const char *spp_profile_string(const spp_profile *p, uint32_t id, size_t *len);

/* Interns a frame; returns its id or SPP_NONE. */
uint32_t spp_profile_frame(spp_profile *p, const spp_frame *f);

/* Returns the index of the thread with this tid, creating it; SPP_NONE on
 * failure. A non-NULL name replaces the thread's name. */
uint32_t spp_profile_thread(spp_profile *p, uint64_t tid, const char *name);

/* Returns the stack id for frame called from parent; SPP_NONE on failure. */
uint32_t spp_profile_push(spp_profile *p, uint32_t parent, uint32_t frame);

/* Counts one sample of weight_ns on stack at time_ns. */
void spp_profile_add(spp_profile *p, uint32_t stack, uint64_t weight_ns, uint64_t time_ns);

/* Counts count samples standing for weight_ns in all on stack, at no
 * particular time (not in the timeline): for profiles read back from a file,
 * where only totals are known. Totals saturate rather than wrap. */
void spp_profile_add_many(spp_profile *p, uint32_t stack, uint64_t count, uint64_t weight_ns);

/* Keeps the timeline from now on, in at most max_bytes (0 = unbounded, only
 * for a profile without a memory limit). A limited profile sets max_bytes
 * aside from its limit for the timeline alone, so the totals never lose a
 * sample to the timeline. When the timeline's budget is used up it stops
 * (it stays a complete prefix in time) and counts the samples it left out;
 * the totals go on. Returns SPP_EINVAL when the budget does not fit. */
int spp_profile_keep_timeline(spp_profile *p, size_t max_bytes);
int spp_profile_timeline_kept(const spp_profile *p);
uint32_t spp_profile_nruns(const spp_profile *p);
const spp_run *spp_profile_run_at(const spp_profile *p, uint32_t i);
/* Samples (and, if weight_ns is not NULL, their weight) counted in the
 * totals but not in the timeline; 0 when the timeline is complete. */
uint64_t spp_profile_timeline_left_out(const spp_profile *p, uint64_t *weight_ns);

/* Counts samples that could not be recorded. */
void spp_profile_drop(spp_profile *p, uint64_t n);

/* Read access for writers. */
uint32_t spp_profile_nthreads(const spp_profile *p);
const spp_thread *spp_profile_thread_at(const spp_profile *p, uint32_t i);
uint32_t spp_profile_nframes(const spp_profile *p);
const spp_frame *spp_profile_frame_at(const spp_profile *p, uint32_t id);
uint32_t spp_profile_nstacks(const spp_profile *p);
const spp_stack *spp_profile_stack_at(const spp_profile *p, uint32_t id);
uint64_t spp_profile_samples(const spp_profile *p);
uint64_t spp_profile_weight(const spp_profile *p);
uint64_t spp_profile_dropped(const spp_profile *p);
size_t spp_profile_memory(const spp_profile *p);

/* Fills out[0..depth) with the frame ids of stack, root first; returns the
 * depth (capped at cap). */
uint32_t spp_profile_unwind(const spp_profile *p, uint32_t stack, uint32_t *out, uint32_t cap);

/* Windows of a profile: the samples counted since a mark. A mark remembers
 * each stack's totals when it was last advanced; spp_profile_take_window
 * copies what grew since then into a new profile (the stacks, frames,
 * strings and threads they need, nothing else) and advances the mark, so
 * one recording feeds both the whole profile and a series of windows with
 * one model and one set of writers. The window's threads get first_ns and
 * last_ns of the source thread's latest sample; its meta is the source's
 * (the caller sets the window's start and end). The timeline is not
 * copied. */
typedef struct spp_mark spp_mark;
spp_mark *spp_mark_new(void);            /* NULL when out of memory */
void spp_mark_free(spp_mark *m);         /* NULL is a no-op */
/* A new profile (no memory limit) of what p counted since m, or NULL when
 * out of memory (m is then not advanced). *samples, if not NULL, gets the
 * number of samples the window holds. */
spp_profile *spp_profile_take_window(const spp_profile *p, spp_mark *m, uint64_t *samples);

/* Free-form metadata the writers print (title, rate). Copies the strings. */
typedef struct spp_meta {
    const char *title;       /* command line or program name */
    const char *clock;       /* "cpu" or "wall": what the weights measure */
    const char *mechanism;   /* sampling mechanism, e.g. "perf_event task-clock" */
    double interval_ms;      /* asked-for sampling interval */
    uint64_t start_ns;       /* CLOCK_REALTIME at start */
    uint64_t end_ns;         /* CLOCK_REALTIME at end */
    uint64_t pid;            /* the profiled process, 0 if unknown */
} spp_meta;

int spp_profile_set_meta(spp_profile *p, const spp_meta *m);
const spp_meta *spp_profile_meta(const spp_profile *p);

#endif
