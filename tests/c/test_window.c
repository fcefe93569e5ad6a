/* test_window.c - unit test of the profile's windows (spp_profile_take_window):
 * each window holds exactly the samples counted since the previous one, with
 * the frames, thread names and meta they need, including stacks deeper than
 * the copy's 64-frame steps; the windows add up to the whole profile, which
 * they leave unchanged. Built and run by tests/test_upload.py; prints one line
 * per failed check and exits non-zero if any failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/profile.h"
#include "../../src/formats/formats.h"
#include "check.h"

#define DEEP 200 /* frames: more than three of the copy's 64-frame steps */

/* The stack of thread tid made of frames f0..f{depth-1} (f0 outermost). */
static uint32_t stack_of(spp_profile *p, uint64_t tid, const char *tname, int depth, int line)
{
    uint32_t th = spp_profile_thread(p, tid, tname);
    uint32_t s = spp_profile_thread_at(p, th)->root;
    for (int d = 0; d < depth && s != SPP_NONE; d++) {
        char name[16];
        snprintf(name, sizeof(name), "f%d", d);
        spp_frame f = {spp_profile_intern_cstr(p, name), spp_profile_intern_cstr(p, "/x/prog.py"),
                       d == depth - 1 ? line : 10 + d, 10, SPP_FRAME_PYTHON};
        s = spp_profile_push(p, s, spp_profile_frame(p, &f));
    }
    CHECK(s != SPP_NONE);
    return s;
}

static char *folded(const spp_profile *p)
{
    spp_write_opts wo;
    spp_write_opts_default(&wo);
    wo.thread_roots = 1;
    spp_out o;
    spp_out_open_mem(&o);
    CHECK_EQ_U64(spp_write_collapsed(p, &o, &wo), SPP_OK);
    return spp_out_take(&o, NULL);
}

/* The count folded text gives the line ending in leaf (thread roots on),
 * 0 if there is none. */
static unsigned long long count_of(const char *text, const char *thread, const char *leaf)
{
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *end = strchr(l, '\n');
        size_t n = end ? (size_t)(end - l) : strlen(l);
        char line[8192];
        if (n >= sizeof(line))
            continue;
        memcpy(line, l, n);
        line[n] = '\0';
        char *sp = strrchr(line, ' ');
        if (!sp || strncmp(line, thread, strlen(thread)) != 0)
            continue;
        *sp = '\0';
        size_t ll = strlen(leaf);
        if (strlen(line) >= ll && strcmp(line + strlen(line) - ll, leaf) == 0)
            return strtoull(sp + 1, NULL, 10);
    }
    return 0;
}

int main(void)
{
    spp_profile *p = spp_profile_new(0);
    spp_meta meta = {"prog.py", "wall", "test", 10.0, 1000, 2000, 42};
    CHECK_EQ_U64(spp_profile_set_meta(p, &meta), SPP_OK);
    uint32_t deep = stack_of(p, 7, "MainThread", DEEP, 500);
    uint32_t shallow = stack_of(p, 8, NULL, 2, 20);
    spp_mark *m = spp_mark_new();
    CHECK(m != NULL);

    /* Window 1: 3 deep samples, 2 shallow ones. */
    for (int i = 0; i < 3; i++)
        spp_profile_add(p, deep, 10, 1000 + (uint64_t)i);
    spp_profile_add(p, shallow, 5, 1000);
    spp_profile_add(p, shallow, 5, 1001);
    uint64_t n = 0;
    spp_profile *w1 = spp_profile_take_window(p, m, &n);
    CHECK(w1 != NULL);
    CHECK_EQ_U64(n, 5);
    CHECK_EQ_U64(spp_profile_samples(w1), 5);
    CHECK_EQ_U64(spp_profile_weight(w1), 40);
    CHECK_EQ_U64(spp_profile_nthreads(w1), 2);
    CHECK(strcmp(spp_profile_meta(w1)->title, "prog.py") == 0);
    CHECK(strcmp(spp_profile_meta(w1)->clock, "wall") == 0);
    char *t1 = folded(w1);
    CHECK(t1 && count_of(t1, "thread MainThread (7);f0 (prog.py:10);f1 (prog.py:11);",
                         "f199 (prog.py:500)") == 3);
    CHECK(t1 && count_of(t1, "thread 8;f0 (prog.py:10)", "f1 (prog.py:20)") == 2);
    /* The deep stack is whole: DEEP frames, in order. */
    uint32_t wdeep = SPP_NONE;
    for (uint32_t s = 0; s < spp_profile_nstacks(w1); s++)
        if (spp_profile_stack_at(w1, s)->self_count == 3)
            wdeep = s;
    CHECK(wdeep != SPP_NONE && spp_profile_stack_at(w1, wdeep)->depth == DEEP);
    free(t1);

    /* Window 2: more on the shallow stack, a new stack of a new thread; the
     * deep stack, not sampled again, is not in it at all. */
    uint32_t other = stack_of(p, 9, "worker", 70, 30);
    spp_profile_add(p, shallow, 5, 1100);
    for (int i = 0; i < 4; i++)
        spp_profile_add(p, other, 1, 1100 + (uint64_t)i);
    spp_profile_drop(p, 2);
    spp_profile *w2 = spp_profile_take_window(p, m, &n);
    CHECK(w2 != NULL);
    CHECK_EQ_U64(n, 5);
    CHECK_EQ_U64(spp_profile_samples(w2), 5);
    CHECK_EQ_U64(spp_profile_weight(w2), 9);
    CHECK_EQ_U64(spp_profile_dropped(w2), 2);
    CHECK_EQ_U64(spp_profile_nthreads(w2), 2);
    for (uint32_t s = 0; s < spp_profile_nstacks(w2); s++)
        CHECK(spp_profile_stack_at(w2, s)->depth < DEEP);
    char *t2 = folded(w2);
    CHECK(t2 && count_of(t2, "thread 8;", "f1 (prog.py:20)") == 1);
    CHECK(t2 && count_of(t2, "thread worker (9);", "f69 (prog.py:30)") == 4);
    CHECK(t2 && !strstr(t2, "MainThread"));
    free(t2);

    /* Window 3: nothing new. */
    spp_profile *w3 = spp_profile_take_window(p, m, &n);
    CHECK(w3 != NULL);
    CHECK_EQ_U64(n, 0);
    CHECK_EQ_U64(spp_profile_samples(w3), 0);
    CHECK_EQ_U64(spp_profile_nthreads(w3), 0);

    /* The whole profile is untouched and is the sum of its windows. */
    CHECK_EQ_U64(spp_profile_samples(p), spp_profile_samples(w1) + spp_profile_samples(w2));
    CHECK_EQ_U64(spp_profile_weight(p), spp_profile_weight(w1) + spp_profile_weight(w2));
    char *whole = folded(p);
    CHECK(whole && count_of(whole, "thread 8;", "f1 (prog.py:20)") == 3);

    /* A profile's meta set from its own strings (a window's from/until). */
    spp_meta again = *spp_profile_meta(w2);
    again.start_ns = 5;
    CHECK_EQ_U64(spp_profile_set_meta(w2, &again), SPP_OK);
    CHECK(strcmp(spp_profile_meta(w2)->title, "prog.py") == 0);

    free(whole);
    spp_profile_free(w1);
    spp_profile_free(w2);
    spp_profile_free(w3);
    spp_mark_free(m);
    spp_profile_free(p);
    if (failures)
        return 1;
    printf("ok\n");
    return 0;
}
