/* test_timeline.c - unit test of the profile's timeline: runs coalesce, the
 * timeline stays within its budget, and once full it leaves samples out
 * without changing the totals; the chrometrace writer then says "partial".
 * Built and run by tests/test_formats.py; prints one line per failed check
 * and exits non-zero if any failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/profile.h"
#include "../../src/formats/formats.h"
#include "check.h"

#define NTHREADS 2
#define NFUNCS 5
#define NSAMPLES 20000
#define STEP 1000000ull /* 1 ms between samples, each standing for 1 ms */

typedef struct fixture {
    spp_profile *p;
    uint32_t stacks[NTHREADS][NFUNCS];
} fixture;

/* Two threads, each with stacks main -> f0..f4. */
static void build(fixture *fx, size_t limit, size_t timeline)
{
    fx->p = spp_profile_new(limit);
    CHECK(fx->p != NULL);
    if (timeline)
        CHECK_EQ_U64(spp_profile_keep_timeline(fx->p, timeline), SPP_OK);
    for (int t = 0; t < NTHREADS; t++) {
        uint32_t th = spp_profile_thread(fx->p, 100 + (uint64_t)t, t ? "worker" : "MainThread");
        uint32_t root = spp_profile_thread_at(fx->p, th)->root;
        spp_frame main_f = {spp_profile_intern_cstr(fx->p, "main"),
                            spp_profile_intern_cstr(fx->p, "/x/prog.py"), 1, 1, SPP_FRAME_PYTHON};
        uint32_t main_s = spp_profile_push(fx->p, root, spp_profile_frame(fx->p, &main_f));
        for (int f = 0; f < NFUNCS; f++) {
            char name[16];
            snprintf(name, sizeof(name), "f%d", f);
            spp_frame fr = {spp_profile_intern_cstr(fx->p, name),
                            spp_profile_intern_cstr(fx->p, "/x/prog.py"), 10 + f, 10, SPP_FRAME_PYTHON};
            fx->stacks[t][f] = spp_profile_push(fx->p, main_s, spp_profile_frame(fx->p, &fr));
            CHECK(fx->stacks[t][f] != SPP_NONE);
        }
    }
}

/* Each thread changes function every 7 samples, so runs are 7 samples
 * long; the threads interleave as the drain would deliver them. */
static void feed(fixture *fx)
{
    for (uint64_t i = 0; i < NSAMPLES; i++)
        for (int t = 0; t < NTHREADS; t++)
            spp_profile_add(fx->p, fx->stacks[t][(i / 7 + (uint64_t)t) % NFUNCS], STEP,
                            1000000000000ull + (i + 1) * STEP);
}

static char *render(const spp_profile *p)
{
    spp_out o;
    spp_out_open_mem(&o);
    CHECK_EQ_U64(spp_write_chrometrace(p, &o, NULL), SPP_OK);
    return spp_out_take(&o, NULL);
}

static void test_complete_timeline_coalesces(void)
{
    fixture fx;
    build(&fx, 0, 0 + ((size_t)1 << 20));
    feed(&fx);
    const uint32_t runs_per_thread = (NSAMPLES + 6) / 7;
    CHECK_EQ_U64(spp_profile_nruns(fx.p), NTHREADS * runs_per_thread);
    CHECK_EQ_U64(spp_profile_timeline_left_out(fx.p, NULL), 0);
    /* Runs of a thread abut: each starts where the previous one ended. */
    uint64_t count = 0, prev_end[NTHREADS] = {0};
    for (uint32_t i = 0; i < spp_profile_nruns(fx.p); i++) {
        const spp_run *r = spp_profile_run_at(fx.p, i);
        uint32_t t = spp_profile_stack_at(fx.p, r->stack)->thread;
        if (prev_end[t])
            CHECK_EQ_U64(r->start_ns, prev_end[t]);
        CHECK_EQ_U64(r->end_ns - r->start_ns, r->weight_ns);
        prev_end[t] = r->end_ns;
        count += r->count;
    }
    CHECK_EQ_U64(count, (uint64_t)NSAMPLES * NTHREADS);
    char *json = render(fx.p);
    CHECK(json && strstr(json, "\"timeline\":\"complete\""));
    CHECK(json && strstr(json, "\"name\":\"thread_name\",\"args\":{\"name\":\"worker\"}"));
    free(json);
    spp_profile_free(fx.p);
}

static void test_bound_keeps_totals(void)
{
    /* The reference: the same samples without a timeline. */
    fixture ref;
    build(&ref, 64 << 10, 0);
    feed(&ref);

    fixture fx;
    const size_t limit = 64 << 10, share = 4 << 10; /* 128 runs of 32 bytes */
    build(&fx, limit, share);
    feed(&fx);

    /* The totals are those of the profile without a timeline. */
    CHECK_EQ_U64(spp_profile_samples(fx.p), (uint64_t)NSAMPLES * NTHREADS);
    CHECK_EQ_U64(spp_profile_weight(fx.p), (uint64_t)NSAMPLES * NTHREADS * STEP);
    CHECK_EQ_U64(spp_profile_dropped(fx.p), 0);
    CHECK_EQ_U64(spp_profile_nstacks(fx.p), spp_profile_nstacks(ref.p));
    for (uint32_t s = 0; s < spp_profile_nstacks(fx.p); s++) {
        CHECK_EQ_U64(spp_profile_stack_at(fx.p, s)->self_count,
                     spp_profile_stack_at(ref.p, s)->self_count);
        CHECK_EQ_U64(spp_profile_stack_at(fx.p, s)->self_weight,
                     spp_profile_stack_at(ref.p, s)->self_weight);
    }
    /* The timeline stopped at its budget and counted the rest. */
    CHECK(spp_profile_nruns(fx.p) * sizeof(spp_run) <= share);
    CHECK(spp_profile_nruns(fx.p) >= share / sizeof(spp_run) - 1);
    CHECK(spp_profile_memory(fx.p) <= limit);
    uint64_t left_weight, left = spp_profile_timeline_left_out(fx.p, &left_weight);
    uint64_t kept = 0;
    for (uint32_t i = 0; i < spp_profile_nruns(fx.p); i++)
        kept += spp_profile_run_at(fx.p, i)->count;
    CHECK(left > 0);
    CHECK_EQ_U64(kept + left, (uint64_t)NSAMPLES * NTHREADS);
    CHECK_EQ_U64(left_weight, left * STEP);

    char *json = render(fx.p);
    CHECK(json && strstr(json, "\"timeline\":\"partial\""));
    char expect[64];
    snprintf(expect, sizeof(expect), "\"timeline_left_out_samples\":%llu", (unsigned long long)left);
    CHECK(json && strstr(json, expect));
    free(json);

    /* A budget larger than the limit is refused. */
    spp_profile *small = spp_profile_new(4096);
    CHECK_EQ_U64(spp_profile_keep_timeline(small, 8192), (uint64_t)(int64_t)SPP_EINVAL);
    CHECK_EQ_U64(spp_profile_keep_timeline(small, 0), (uint64_t)(int64_t)SPP_EINVAL);
    spp_profile_free(small);
    spp_profile_free(fx.p);
    spp_profile_free(ref.p);
}

static void test_gap_starts_new_run(void)
{
    fixture fx;
    build(&fx, 0, (size_t)1 << 20);
    uint32_t s = fx.stacks[0][0];
    spp_profile_add(fx.p, s, STEP, 10 * STEP);
    spp_profile_add(fx.p, s, STEP, 11 * STEP);   /* ran on: same run */
    spp_profile_add(fx.p, s, STEP, 20 * STEP);   /* off for 8 ms of 9: a new run */
    spp_profile_add(fx.p, s, STEP, 20 * STEP - 5); /* clock stepped back: read as no time */
    CHECK_EQ_U64(spp_profile_nruns(fx.p), 2);
    const spp_run *a = spp_profile_run_at(fx.p, 0), *b = spp_profile_run_at(fx.p, 1);
    CHECK_EQ_U64(a->start_ns, 9 * STEP);
    CHECK_EQ_U64(a->end_ns, 11 * STEP);
    CHECK_EQ_U64(a->count, 2);
    CHECK_EQ_U64(b->start_ns, 19 * STEP);
    CHECK_EQ_U64(b->end_ns, 20 * STEP);
    CHECK_EQ_U64(b->count, 2);
    /* Another stack at the same instant: a run of no length, which the
     * trace leaves out rather than draw an event of no length. */
    spp_profile_add(fx.p, fx.stacks[0][1], STEP, 20 * STEP);
    CHECK_EQ_U64(spp_profile_nruns(fx.p), 3);
    CHECK_EQ_U64(spp_profile_run_at(fx.p, 2)->start_ns, spp_profile_run_at(fx.p, 2)->end_ns);
    char *json = render(fx.p);
    CHECK(json && !strstr(json, "\"dur\":0.000"));
    CHECK(json && !strstr(json, "\"name\":\"f1\""));
    free(json);
    spp_profile_free(fx.p);
}

int main(void)
{
    test_complete_timeline_coalesces();
    test_bound_keeps_totals();
    test_gap_starts_new_run();
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
