/* signal_cost.c - what the kernel charges a thread for being interrupted
 * once per interval of its CPU time, by each way a sampler can do it, with
 * no sampler attached: the same CPU-bound C loop runs untouched and under
 * each way in turn, the order rotating round by round, and each round's
 * thread CPU time is compared with the untouched run of the same round.
 *
 *   signal_cost ITERATIONS ROUNDS INTERVAL_NS
 *
 * With ROUNDS 0, prints the thread CPU seconds of one untouched loop.
 *
 * Prints one line per way: name, signals per CPU-second, then the rounds'
 * ratios to the untouched run (one line of numbers), for bench/signal_cost.py
 * to summarise. The handler counts and returns. */
#include <fcntl.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum way { NONE, PERF_TIMER_ONLY, PERF_ASYNC, PERF_SIGTRAP, CPU_TIMER, POLL_TGKILL, NWAYS };

static const char *const names[NWAYS] = {
    "untouched",
    "perf_event task-clock, no signal (the timer interrupt alone)",
    "perf_event task-clock + SIGPROF from O_ASYNC",
    "perf_event task-clock + SIGTRAP from sigtrap",
    "POSIX CPU-time timer + SIGPROF (on the scheduler tick)",
    "another thread polls the CPU clock + SIGPROF by tgkill",
};

static volatile sig_atomic_t nsignals;
static void handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)si;
    (void)uc;
    nsignals = nsignals + 1;
}

static double thread_cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static volatile double sink;
static void work(long n)
{
    double x = 0;
    for (long i = 0; i < n; i++)
        x += (double)i * 0.5;
    sink = x;
}

static pid_t self_tid;
static uint64_t interval_ns;

static int open_perf(int signal_kind)
{
    struct perf_event_attr a;
    memset(&a, 0, sizeof(a));
    a.size = sizeof(a);
    a.type = PERF_TYPE_SOFTWARE;
    a.config = PERF_COUNT_SW_TASK_CLOCK;
    a.sample_period = interval_ns;
    a.disabled = 1;
    a.exclude_hv = 1;
#ifdef PERF_ATTR_SIZE_VER7
    if (signal_kind == PERF_SIGTRAP) {
        a.sigtrap = 1;
        a.remove_on_exec = 1;
    }
#endif
    int fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (signal_kind == PERF_ASYNC) {
        struct f_owner_ex o = {F_OWNER_TID, self_tid};
        if (fcntl(fd, F_SETOWN_EX, &o) < 0 || fcntl(fd, F_SETSIG, SIGPROF) < 0 ||
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC) < 0) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

/* The polling way, as spprof's poller does it: wake every half interval
 * (absolute deadlines), read the thread's CPU clock, signal it when an
 * interval of CPU has passed since the last signal. Parked on a condition
 * variable in the other ways, so that it costs them nothing. */
static pthread_mutex_t poll_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t poll_cv = PTHREAD_COND_INITIALIZER;
static atomic_int polling;
static int poller_parked;
static clockid_t main_clock;

static long long clock_ns(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void *poller(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&poll_mu);
    for (;;) {
        poller_parked = 1;
        pthread_cond_broadcast(&poll_cv);
        while (!atomic_load(&polling))
            pthread_cond_wait(&poll_cv, &poll_mu);
        poller_parked = 0;
        pthread_mutex_unlock(&poll_mu);
        long long last = clock_ns(main_clock);
        struct timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        while (atomic_load(&polling)) {
            next.tv_nsec += (long)(interval_ns / 2);
            while (next.tv_nsec >= 1000000000L) {
                next.tv_nsec -= 1000000000L;
                next.tv_sec++;
            }
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
            long long now = clock_ns(main_clock);
            if (atomic_load(&polling) && now - last >= (long long)interval_ns) {
                last = now;
                syscall(SYS_tgkill, getpid(), self_tid, SIGPROF);
            }
        }
        pthread_mutex_lock(&poll_mu);
    }
    return NULL;
}

static void set_polling(int on)
{
    pthread_mutex_lock(&poll_mu);
    atomic_store(&polling, on);
    pthread_cond_broadcast(&poll_cv);
    while (!on && !poller_parked)
        pthread_cond_wait(&poll_cv, &poll_mu); /* no signal of this way after it */
    pthread_mutex_unlock(&poll_mu);
    syscall(SYS_getpid); /* (a signal still pending is taken on the way back) */
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: signal_cost ITERATIONS ROUNDS INTERVAL_NS\n");
        return 2;
    }
    long iterations = atol(argv[1]);
    int rounds = atoi(argv[2]);
    interval_ns = strtoull(argv[3], NULL, 10);
    if (iterations <= 0 || rounds < 0 || interval_ns < 10000) {
        fprintf(stderr, "signal_cost: bad arguments\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGPROF, &sa, NULL);
    sigaction(SIGTRAP, &sa, NULL);
    self_tid = (pid_t)syscall(SYS_gettid);
    if (rounds == 0) {
        work(iterations); /* warm */
        double t0 = thread_cpu();
        work(iterations);
        printf("%.6f\n", thread_cpu() - t0);
        return 0;
    }
    /* The poller shares no CPU with the loop only where there are two. */
    cpu_set_t cpus;
    int two_cpus = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) >= 2;
    pthread_t poll_thread;
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGPROF);
    sigaddset(&block, SIGTRAP);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int have_poller = two_cpus && pthread_getcpuclockid(pthread_self(), &main_clock) == 0 &&
                      pthread_create(&poll_thread, NULL, poller, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    int fds[NWAYS];
    for (int w = 0; w < NWAYS; w++)
        fds[w] = w == PERF_TIMER_ONLY || w == PERF_ASYNC || w == PERF_SIGTRAP ? open_perf(w) : -1;
    timer_t timer;
    struct sigevent sev;
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev._sigev_un._tid = self_tid;
    sev.sigev_signo = SIGPROF;
    int have_timer = timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &timer) == 0;
    int usable[NWAYS];
    for (int w = 0; w < NWAYS; w++)
        usable[w] = (w != PERF_TIMER_ONLY && w != PERF_ASYNC && w != PERF_SIGTRAP) || fds[w] >= 0;
    usable[CPU_TIMER] = have_timer;
    usable[POLL_TGKILL] = have_poller;

    double *secs = calloc((size_t)rounds * NWAYS, sizeof(double));
    long sigs[NWAYS] = {0};
    double total[NWAYS] = {0};
    work(iterations); /* warm */
    for (int k = 0; k < rounds; k++) {
        for (int j = 0; j < NWAYS; j++) {
            int w = (j + k) % NWAYS;
            if (!usable[w])
                continue;
            long before = nsignals;
            if (fds[w] >= 0)
                ioctl(fds[w], PERF_EVENT_IOC_ENABLE, 0);
            if (w == CPU_TIMER) {
                struct itimerspec it;
                it.it_interval.tv_sec = (time_t)(interval_ns / 1000000000ull);
                it.it_interval.tv_nsec = (long)(interval_ns % 1000000000ull);
                it.it_value = it.it_interval;
                timer_settime(timer, 0, &it, NULL);
            }
            if (w == POLL_TGKILL)
                set_polling(1);
            double t0 = thread_cpu();
            work(iterations);
            double t1 = thread_cpu();
            if (fds[w] >= 0)
                ioctl(fds[w], PERF_EVENT_IOC_DISABLE, 0);
            if (w == CPU_TIMER) {
                struct itimerspec off;
                memset(&off, 0, sizeof(off));
                timer_settime(timer, 0, &off, NULL);
            }
            if (w == POLL_TGKILL)
                set_polling(0);
            secs[k * NWAYS + w] = t1 - t0;
            total[w] += t1 - t0;
            sigs[w] += nsignals - before;
        }
    }
    for (int w = 1; w < NWAYS; w++) {
        if (!usable[w]) {
            printf("%s\tunavailable\n", names[w]);
            continue;
        }
        printf("%s\t%.1f\t", names[w], (double)sigs[w] / total[w]);
        for (int k = 0; k < rounds; k++)
            printf("%s%.6f", k ? " " : "", secs[k * NWAYS + w] / secs[k * NWAYS + NONE]);
        printf("\n");
    }
    free(secs);
    return 0;
}
