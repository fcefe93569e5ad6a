/* write_cost.c - the cost of writing a large profile in one format, with the
 * real writers: builds a profile of NSAMPLES samples over NSTACKS distinct
 * stacks DEPTH frames deep (spread over NTHREADS threads), then writes it
 * with spp_write_file, the call the CLI and the extension make.
 *
 *     write_cost FORMAT PATH [NSAMPLES NSTACKS DEPTH NTHREADS]
 *
 * Prints one JSON line: the time to build the model and to write the file
 * (wall and CPU), the process's peak RSS after building and after writing
 * (VmHWM), and the file's size. Built by bench/output_cost.py
 * against src/core and src/formats; a benchmark driver, not part of spprof. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <math.h>

#include "../../src/core/profile.h"
#include "../../src/formats/formats.h"

#define STEP 1000000ull /* 1 ms between a thread's samples, each standing for 1 ms */
#define TIMELINE_MAX ((size_t)256 << 20) /* what `spprof record -f chrometrace` keeps */

static double now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The peak RSS of this program: VmHWM, whose high-water mark starts afresh
 * at exec (getrusage's ru_maxrss carries the parent's over exec). */
static long peak_kb(void)
{
    long kb = -1;
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The frame at depth d of stack j (of per stacks in a thread): stacks share
 * prefixes, the number of distinct prefixes growing geometrically from 1 at
 * the root to per at the leaf, as in a program whose calls fan out. */
static uint32_t frame_at(spp_profile *p, uint32_t d, uint32_t depth, uint32_t j, uint32_t per)
{
    double n = floor(pow((double)per, (double)(d + 1) / depth) + 0.5);
    uint32_t k = (uint32_t)((double)j * n / per);
    char name[64], file[64];
    snprintf(name, sizeof(name), "handler_%u_%u", d, k);
    snprintf(file, sizeof(file), "/srv/app/service/module_%u.py", d % 17);
    spp_frame f = {spp_profile_intern_cstr(p, name), spp_profile_intern_cstr(p, file),
                   (int32_t)(10 + k % 400), 10, SPP_FRAME_PYTHON};
    return spp_profile_frame(p, &f);
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 7) {
        fprintf(stderr, "usage: write_cost FORMAT PATH [NSAMPLES NSTACKS DEPTH NTHREADS]\n");
        return 2;
    }
    const char *format = argv[1], *path = argv[2];
    uint64_t nsamples = argc == 7 ? strtoull(argv[3], NULL, 10) : 1000000;
    uint32_t nstacks = argc == 7 ? (uint32_t)strtoul(argv[4], NULL, 10) : 10000;
    uint32_t depth = argc == 7 ? (uint32_t)strtoul(argv[5], NULL, 10) : 30;
    uint32_t nthreads = argc == 7 ? (uint32_t)strtoul(argv[6], NULL, 10) : 4;
    if (!nsamples || !depth || !nthreads || nstacks < nthreads) {
        fprintf(stderr, "write_cost: bad sizes\n");
        return 2;
    }
    uint32_t per = nstacks / nthreads;
    int rc = 1;
    uint32_t *leaf = calloc((size_t)nthreads * per, sizeof(*leaf));
    spp_profile *p = spp_profile_new(0);
    if (!leaf || !p)
        goto out;
    double b0 = now(CLOCK_MONOTONIC);
    if (strcmp(format, "chrometrace") == 0 && spp_profile_keep_timeline(p, TIMELINE_MAX) < 0)
        goto out;
    for (uint32_t t = 0; t < nthreads; t++) {
        char tname[32];
        snprintf(tname, sizeof(tname), "worker-%u", t);
        uint32_t th = spp_profile_thread(p, 1000 + t, tname);
        uint32_t root = spp_profile_thread_at(p, th)->root;
        for (uint32_t j = 0; j < per; j++) {
            uint32_t s = root;
            for (uint32_t d = 0; d < depth; d++)
                s = spp_profile_push(p, s, frame_at(p, d, depth, j, per));
            if (s == SPP_NONE)
                goto out;
            leaf[(size_t)t * per + j] = s;
        }
    }
    /* Samples come in runs on one stack (1 to 19 consecutive samples of a
     * thread, 10 on average, as a sampler at 1 kHz sees a program), the
     * next stack each of the thread's in turn first (so that every stack
     * has samples), then skewed towards the first ones (the smaller of two
     * uniform draws); threads interleaved as a sampler delivers them. Only
     * the Chrome trace depends on the order. */
    uint64_t seed = 0x9e3779b97f4a7c15ull, base = 1700000000000000000ull;
    uint32_t *cur = calloc(nthreads, sizeof(*cur)), *left = calloc(nthreads, sizeof(*left));
    uint32_t *runs = calloc(nthreads, sizeof(*runs));
    if (!cur || !left || !runs) {
        free(cur);
        free(left);
        free(runs);
        goto out;
    }
    for (uint64_t i = 0; i < nsamples; i++) {
        uint32_t t = (uint32_t)(i % nthreads);
        if (left[t] == 0) {
            uint32_t a = (uint32_t)(xorshift(&seed) % per), b = (uint32_t)(xorshift(&seed) % per);
            uint32_t j = runs[t] < per ? runs[t] : (a < b ? a : b);
            runs[t]++;
            cur[t] = leaf[(size_t)t * per + j];
            left[t] = 1 + (uint32_t)(xorshift(&seed) % 19);
        }
        left[t]--;
        spp_profile_add(p, cur[t], STEP, base + (i / nthreads + 1) * STEP);
    }
    free(cur);
    free(left);
    free(runs);
    spp_meta meta = {"write_cost", "wall", "synthetic", 1.0, base,
                     base + (nsamples / nthreads + 1) * STEP, 4242};
    if (spp_profile_set_meta(p, &meta) < 0)
        goto out;
    double build_s = now(CLOCK_MONOTONIC) - b0;
    uint32_t distinct = 0;
    for (size_t i = 0; i < (size_t)nthreads * per; i++)
        distinct += spp_profile_stack_at(p, leaf[i])->self_count > 0;
    long model_kb = peak_kb();
    double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    int wrc = spp_write_file(p, path, format, NULL);
    double write_s = now(CLOCK_MONOTONIC) - w0, write_cpu = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
    if (wrc < 0) {
        fprintf(stderr, "write_cost: writing %s failed (%d)\n", format, wrc);
        goto out;
    }
    struct stat st;
    if (stat(path, &st) < 0)
        goto out;
    printf("{\"format\": \"%s\", \"samples\": %llu, \"stacks\": %u, \"frames\": %u, \"build_s\": %.4f, "
           "\"write_s\": %.4f, \"write_cpu_s\": %.4f, \"model_peak_kb\": %ld, \"peak_kb\": %ld, "
           "\"model_bytes\": %zu, \"distinct\": %u, \"bytes\": %lld}\n",
           format, (unsigned long long)spp_profile_samples(p), spp_profile_nstacks(p),
           spp_profile_nframes(p), build_s, write_s, write_cpu, model_kb, peak_kb(),
           spp_profile_memory(p), distinct, (long long)st.st_size);
    rc = 0;
out:
    if (rc)
        fprintf(stderr, "write_cost: out of memory or bad profile\n");
    spp_profile_free(p);
    free(leaf);
    return rc;
}
