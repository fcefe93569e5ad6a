/* top.c - `spprof top`: a live view of the functions a program spends its
 * time in, refreshed every --delay seconds; keys 1-4 sort, q quits. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static volatile sig_atomic_t quit_requested;
static void on_quit(int sig)
{
    (void)sig;
    quit_requested = 1;
}

typedef struct fstat {
    uint64_t own, total, seen_gen;
} fstat;

typedef struct top_state {
    spp_profile *profile;  /* frames interned per function (no lines) */
    spp_resolver *res;
    fstat *stats;          /* by frame id */
    uint32_t cap;
    uint64_t samples, gen, gil_samples, snapshots, errors;
    int sort;              /* 1 own, 2 total */
    const spp_cli_opts *o;
    int active;            /* threads counted in the last snapshot */
} top_state;

static fstat *stat_for(top_state *t, uint32_t frame)
{
    if (frame >= t->cap) {
        uint32_t ncap = t->cap ? t->cap : 256;
        while (ncap <= frame)
            ncap *= 2;
        fstat *n = realloc(t->stats, ncap * sizeof(fstat));
        if (!n)
            return NULL;
        memset(n + t->cap, 0, (ncap - t->cap) * sizeof(fstat));
        t->stats = n;
        t->cap = ncap;
    }
    return &t->stats[frame];
}

static void count(top_state *t, const spp_sampled_thread *st)
{
    t->samples++;
    t->gen++;
    for (int i = 0; i < st->nframes; i++) {
        uint32_t f = spp_resolver_frame(t->res, &st->frames[i]);
        fstat *fs = f == SPP_NONE ? NULL : stat_for(t, f);
        if (!fs)
            continue;
        if (i == 0)
            fs->own++;
        if (fs->seen_gen != t->gen) { /* count a recursive function once */
            fs->total++;
            fs->seen_gen = t->gen;
        }
    }
}

/* Counts a snapshot while the target is still paused (code objects seen
 * for the first time are read then: see record.c's add_snapshot). */
static void count_snapshot(void *ctx, const spp_target *tg, const spp_reader *r,
                           const spp_sampled_thread *threads, int n)
{
    (void)tg;
    (void)r;
    top_state *t = ctx;
    int gil = 0;
    for (int i = 0; i < n; i++) {
        gil |= threads[i].th.holds_gil;
        if (threads[i].idle && !t->o->idle)
            continue;
        t->active++;
        count(t, &threads[i]);
    }
    t->gil_samples += (uint64_t)gil;
}

static top_state *sort_ctx;
static int by_column(const void *a, const void *b)
{
    const fstat *x = &sort_ctx->stats[*(const uint32_t *)a], *y = &sort_ctx->stats[*(const uint32_t *)b];
    uint64_t kx = sort_ctx->sort == 2 ? x->total : x->own, ky = sort_ctx->sort == 2 ? y->total : y->own;
    return kx < ky ? 1 : kx > ky ? -1 : 0;
}

static void draw(top_state *t, const spp_cli_opts *o, const spp_target *tg, double elapsed,
                 const char *cmd, int nthreads, int active, int ended)
{
    struct winsize ws;
    int rows = 40, cols = 120;
    if (ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 5) {
        rows = ws.ws_row;
        cols = ws.ws_col;
    }
    char v[32];
    spp_version_string(tg->version, v, sizeof(v));
    printf("\033[H\033[2J");
    printf("spprof top - PID %d: %.*s\r\n", (int)o->pid, cols > 30 ? cols - 24 : 10, cmd);
    printf("Python %s%s  Samples: %llu (%.0f/s)  Threads: %d (%d active)  Errors: %llu  ", v,
           tg->off.free_threaded ? " (free-threaded)" : "", (unsigned long long)t->samples,
           elapsed > 0 ? (double)t->snapshots / elapsed : 0.0, nthreads, active,
           (unsigned long long)t->errors);
    if (tg->off.free_threaded)
        printf("GIL: none\r\n");
    else
        printf("GIL held: %.0f%%\r\n", t->snapshots ? 100.0 * (double)t->gil_samples / (double)t->snapshots : 0.0);
    printf("Sort: %s   Keys: 1 own, 2 total, q quit%s\r\n\r\n", t->sort == 2 ? "total" : "own",
           ended ? "   [the process has exited]" : "");
    printf("\033[7m %7s %7s %9s %9s  %-*s\033[0m\r\n", "%Own", "%Total", "OwnTime", "TotalTime",
           cols > 44 ? cols - 44 : 20, "Function (filename)");
    uint32_t n = spp_profile_nframes(t->profile), k = 0;
    uint32_t *order = malloc(sizeof(uint32_t) * (n ? n : 1));
    if (!order)
        return;
    for (uint32_t i = 0; i < n && i < t->cap; i++)
        if (t->stats[i].total)
            order[k++] = i;
    sort_ctx = t;
    qsort(order, k, sizeof(uint32_t), by_column);
    double per = o->rate > 0 ? 1.0 / o->rate : 0.01;
    for (uint32_t j = 0; j < k && (int)j < rows - 6; j++) {
        const fstat *fs = &t->stats[order[j]];
        const spp_frame *f = spp_profile_frame_at(t->profile, order[j]);
        const char *file = spp_short_file(spp_profile_string(t->profile, f->file, NULL), o->full_filenames);
        char label[512];
        snprintf(label, sizeof(label), "%s (%s)", spp_profile_string(t->profile, f->name, NULL), file);
        printf(" %6.1f%% %6.1f%% %8.2fs %8.2fs  %.*s\r\n",
               100.0 * (double)fs->own / (double)(t->samples ? t->samples : 1),
               100.0 * (double)fs->total / (double)(t->samples ? t->samples : 1), (double)fs->own * per,
               (double)fs->total * per, cols > 44 ? cols - 44 : 20, label);
    }
    free(order);
    fflush(stdout);
}

int spp_cmd_top(const spp_cli_opts *o)
{
    spp_session *s = spp_session_attach(o->pid, o->nonblocking);
    if (!s)
        return 1;
    spp_session_pause_idle(s, o->idle);
    const spp_target *tg = spp_session_target(s);
    top_state t;
    memset(&t, 0, sizeof(t));
    t.sort = 1;
    spp_sampled_thread *threads = malloc(sizeof(spp_sampled_thread) * 256);
    if (!threads || spp_session_model(s, 0, &t.profile, &t.res) < 0) {
        free(threads);
        spp_session_close(s);
        return 1;
    }
    char cmd[1024];
    spp_process_cmdline(o->pid, cmd, sizeof(cmd));

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_quit;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct termios saved;
    int raw = isatty(0) && tcgetattr(0, &saved) == 0;
    if (raw) {
        struct termios tio = saved;
        tio.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        tio.c_cc[VMIN] = 0;
        tio.c_cc[VTIME] = 0;
        tcsetattr(0, TCSANOW, &tio);
    }
    printf("\033[?25l"); /* hide the cursor while drawing */

    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double next_draw = 0, period = 1.0 / o->rate;
    int nthreads = 0, active = 0, ended = 0;
    while (!quit_requested) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
        if (!ended) {
            int errors = 0;
            t.o = o;
            t.active = 0;
            int n = spp_session_sample_visit(s, threads, 256, &errors, count_snapshot, &t);
            if (n < 0) {
                ended = 1;
            } else {
                t.snapshots++;
                t.errors += (uint64_t)errors;
                nthreads = n;
                active = t.active;
            }
        }
        if (elapsed >= next_draw || ended) {
            draw(&t, o, tg, elapsed, cmd, nthreads, active, ended);
            next_draw = elapsed + (double)o->delay_ms / 1000.0;
        }
        /* Wait for the next sample, reading keys meanwhile. */
        struct pollfd pfd = {0, POLLIN, 0};
        int wait_ms = ended ? 200 : (int)(period * 1000);
        if (poll(&pfd, raw ? 1 : 0, wait_ms) > 0) {
            char c;
            if (read(0, &c, 1) == 1) {
                if (c == 'q' || c == 'Q')
                    break;
                if (c == '1' || c == '2')
                    t.sort = c - '0';
                next_draw = 0;
            }
        }
    }
    printf("\033[?25h\r\n");
    if (raw)
        tcsetattr(0, TCSANOW, &saved);
    spp_session_close(s);
    spp_resolver_free(t.res);
    spp_profile_free(t.profile);
    free(t.stats);
    free(threads);
    return 0;
}
