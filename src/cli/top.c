/* top.c - `spprof top`: a live view of the functions a program spends its
 * time in, refreshed every --delay seconds; keys 1-2 sort, q quits. With
 * --native C functions are counted too, with --subprocesses the functions
 * of every Python descendant, each row with its process. */
#include <errno.h>
#include <stdarg.h>
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

/* A row is a function of a process: the stack (process root, function) in
 * the profile's trie, which interns the pair; its stats are by that id. */
typedef struct top_state {
    const spp_cli_opts *o;
    spp_profile *profile;  /* frames interned per function (no lines) */
    fstat *stats;          /* by stack id */
    uint32_t cap;
    uint64_t samples, gen, gil_samples, snapshots, errors;
    int nthreads, active;  /* in the last round of snapshots */
    int sort;              /* 1 own, 2 total */
} top_state;

static fstat *stat_for(top_state *t, uint32_t key)
{
    if (key >= t->cap) {
        uint32_t ncap = t->cap ? t->cap : 256;
        while (ncap <= key)
            ncap *= 2;
        fstat *n = realloc(t->stats, ncap * sizeof(fstat));
        if (!n)
            return NULL;
        memset(n + t->cap, 0, (ncap - t->cap) * sizeof(fstat));
        t->stats = n;
        t->cap = ncap;
    }
    return &t->stats[key];
}

/* Counts one thread's stack (its C frames merged in with --native): own
 * time to the innermost frame, total time once to each function on it. */
static void count(top_state *t, spp_proc *pr, const spp_sampled_thread *st)
{
    t->samples++;
    t->gen++;
    uint32_t th = spp_profile_thread(t->profile, (uint64_t)pr->pid, NULL);
    if (th == SPP_NONE || !st->nframes)
        return;
    uint32_t root = spp_profile_thread_at(t->profile, th)->root;
    static uint32_t frames[SPP_CLI_MAX_MERGED];
    uint32_t n = spp_session_frames(pr->session, pr->resolver, st, frames, SPP_CLI_MAX_MERGED);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t key = frames[i] == SPP_NONE ? SPP_NONE : spp_profile_push(t->profile, root, frames[i]);
        fstat *fs = key == SPP_NONE ? NULL : stat_for(t, key);
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

/* spp_procs_visitor: one process's snapshot. */
static void count_snapshot(void *ctx, spp_proc *pr, const spp_sampled_thread *threads, int n,
                           int errors, uint64_t when)
{
    (void)when;
    top_state *t = ctx;
    t->snapshots++;
    t->errors += (uint64_t)errors;
    t->nthreads += n;
    int gil = 0;
    for (int i = 0; i < n; i++) {
        gil |= threads[i].th.holds_gil;
        if (threads[i].idle && !t->o->idle)
            continue;
        t->active++;
        count(t, pr, &threads[i]);
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

/* What the header says about the target (copied: the target's session
 * may be closed while the view stays up). */
typedef struct top_target {
    uint32_t version;
    int free_threaded;
    char cmd[1024];
} top_target;

#define EOL "\033[K\r\n" /* the end of a line of the view */

/* One line of text of the view, cut to cols - 1 characters (a line that
 * wrapped would push the view down a row, and the last row's newline would
 * then scroll it every frame), at a UTF-8 character's start. */
static void text_line(int cols, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (n > (int)sizeof(buf) - 1)
        n = (int)sizeof(buf) - 1;
    if (cols > 1 && n > cols - 1) {
        n = cols - 1;
        while (n > 0 && ((unsigned char)buf[n] & 0xC0) == 0x80)
            n--;
    }
    printf("%.*s" EOL, n, buf);
}

static void draw(top_state *t, const top_target *tg, double elapsed, int nprocs, int ended)
{
    const spp_cli_opts *o = t->o;
    struct winsize ws;
    int rows = 40, cols = 120;
    if (ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 5) {
        rows = ws.ws_row;
        cols = ws.ws_col;
    }
    char v[32];
    spp_version_string(tg->version, v, sizeof(v));
    /* Drawn in place, each line cleared to its end and the rest of the
     * screen after the last, and written in one write (stdout is fully
     * buffered in spprof top): never a blanked screen between frames. (A
     * terminal may still take a frame in pieces, new rows over old.) */
    printf("\033[H");
    text_line(cols, "spprof top - PID %d: %s", (int)o->pid, tg->cmd);
    char procs[32] = "", gil[32];
    if (o->subprocesses)
        snprintf(procs, sizeof(procs), "Processes: %d  ", nprocs);
    if (tg->free_threaded)
        snprintf(gil, sizeof(gil), "GIL: none");
    else
        snprintf(gil, sizeof(gil), "GIL held: %.0f%%",
                 t->snapshots ? 100.0 * (double)t->gil_samples / (double)t->snapshots : 0.0);
    text_line(cols, "%sPython %s%s  Samples: %llu (%.0f/s)  Threads: %d (%d active)  Errors: %llu  %s",
              procs, v, tg->free_threaded ? " (free-threaded)" : "", (unsigned long long)t->samples,
              elapsed > 0 ? (double)t->snapshots / elapsed : 0.0, t->nthreads, t->active,
              (unsigned long long)t->errors, gil);
    text_line(cols, "Sort: %s   Keys: 1 own, 2 total, q quit%s", t->sort == 2 ? "total" : "own",
              ended ? "   [the process has exited]" : "");
    printf(EOL);
    int fixed = o->subprocesses ? 53 : 44; /* the columns before the function's */
    int width = cols > fixed ? cols - fixed : 20;
    printf("\033[7m %7s %7s %9s %9s  %s%-*s\033[0m" EOL, "%Own", "%Total", "OwnTime", "TotalTime",
           o->subprocesses ? "     PID " : "", width, "Function (filename)");
    uint32_t k = 0;
    uint32_t *order = malloc(sizeof(uint32_t) * (t->cap ? t->cap : 1));
    if (!order) {
        printf("\033[J");
        fflush(stdout);
        return;
    }
    for (uint32_t i = 0; i < t->cap; i++)
        if (t->stats[i].total)
            order[k++] = i;
    sort_ctx = t;
    qsort(order, k, sizeof(uint32_t), by_column);
    double per = o->rate > 0 ? 1.0 / o->rate : 0.01;
    for (uint32_t j = 0; j < k && (int)j < rows - 6; j++) {
        const fstat *fs = &t->stats[order[j]];
        const spp_stack *st = spp_profile_stack_at(t->profile, order[j]);
        const spp_frame *f = spp_profile_frame_at(t->profile, st->frame);
        const char *file = spp_profile_string(t->profile, f->file, NULL);
        char label[512], pid[16] = "";
        /* A native frame's file is its module, already short. */
        if (f->kind != SPP_FRAME_NATIVE)
            file = spp_short_file(file, o->full_filenames);
        snprintf(label, sizeof(label), "%s (%s)", spp_profile_string(t->profile, f->name, NULL), file);
        if (o->subprocesses)
            snprintf(pid, sizeof(pid), "%8llu ",
                     (unsigned long long)spp_profile_thread_at(t->profile, st->thread)->tid);
        printf(" %6.1f%% %6.1f%% %8.2fs %8.2fs  %s%.*s" EOL,
               100.0 * (double)fs->own / (double)(t->samples ? t->samples : 1),
               100.0 * (double)fs->total / (double)(t->samples ? t->samples : 1), (double)fs->own * per,
               (double)fs->total * per, pid, width, label);
    }
    free(order);
    printf("\033[J");
    fflush(stdout);
}

int spp_cmd_top(const spp_cli_opts *o)
{
    spp_session *s = spp_session_attach(o->pid, o->nonblocking, o->native);
    if (!s)
        return 1;
    top_target tg;
    tg.version = spp_session_target(s)->version;
    tg.free_threaded = spp_session_target(s)->off.free_threaded;
    spp_process_cmdline(o->pid, tg.cmd, sizeof(tg.cmd));
    top_state t;
    memset(&t, 0, sizeof(t));
    t.o = o;
    t.sort = 1;
    spp_procs *ps = NULL;
    spp_sampled_thread *threads = malloc(sizeof(spp_sampled_thread) * 256);
    t.profile = spp_profile_new(0);
    if (threads && t.profile)
        ps = spp_procs_new(s, o->pid, t.profile, 0, o);
    if (!ps) {
        spp_cli_error("out of memory");
        spp_profile_free(t.profile);
        free(threads);
        spp_session_close(s);
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_quit;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL); /* the terminal closed: detach as on q */
    struct termios saved;
    int raw = isatty(0) && tcgetattr(0, &saved) == 0;
    if (raw) {
        struct termios tio = saved;
        tio.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        tio.c_cc[VMIN] = 0;
        tio.c_cc[VTIME] = 0;
        tcsetattr(0, TCSANOW, &tio);
    }
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
    printf("\033[?25l\033[2J"); /* hide the cursor while drawing */

    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double next_draw = 0, period = 1.0 / o->rate, last_discovery = -1;
    int nprocs = 1;
    while (!quit_requested) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
        if (ps && o->subprocesses &&
            (last_discovery < 0 || elapsed - last_discovery >= SPP_PROCS_DISCOVERY_NS / 1e9)) {
            spp_procs_discover(ps);
            last_discovery = elapsed;
        }
        if (ps) {
            t.nthreads = t.active = 0;
            if (spp_procs_sample(ps, threads, 256, count_snapshot, &t) < 0) {
                /* The target is gone: let its descendants go at once (a
                 * traced process that gets a signal would stop until
                 * spprof handled it); the view stays until q. */
                spp_procs_free(ps);
                ps = NULL;
            } else {
                nprocs = spp_procs_count(ps);
            }
        }
        if (elapsed >= next_draw || !ps) {
            draw(&t, &tg, elapsed, nprocs, !ps);
            next_draw = elapsed + (double)o->delay_ms / 1000.0;
        }
        /* Wait for the next sample, reading keys meanwhile. */
        struct pollfd pfd = {0, POLLIN, 0};
        /* (At least 1 ms: a target paused back to back makes no progress,
         * each stop and resume costing it kernel time.) */
        int wait_ms = !ps ? 200 : (int)(period * 1000);
        if (wait_ms < 1)
            wait_ms = 1;
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
    fflush(stdout);
    if (raw)
        tcsetattr(0, TCSANOW, &saved);
    spp_procs_free(ps);
    spp_profile_free(t.profile);
    free(t.stats);
    free(threads);
    return 0;
}
