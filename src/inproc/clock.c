/* clock.c - one sampling clock per thread: a perf_event task-clock where the
 * kernel allows it, else a CPU-time POSIX timer, else a wall-clock timer.
 * All of them deliver SPP_SIGNAL to the one thread they measure. */
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

const char *spp_mechanism_name(int mech)
{
    switch (mech) {
    case SPP_MECH_PERF:
        return "perf_event";
    case SPP_MECH_CPUTIMER:
        return "cpu_timer";
    case SPP_MECH_WALL:
        return "wall_timer";
    case SPP_MECH_PERF_USER:
        return "perf_event_user";
    default:
        return "none";
    }
}

static int arm_perf(spp_slot *s, int idx, int user_only)
{
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.size = sizeof(attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.sample_period = spp_g.cfg.interval_ns;
    attr.disabled = 1;
    attr.wakeup_events = 1;
    attr.exclude_hv = 1;
    /* Counting kernel time too needs privilege (perf_event_paranoid < 2 or
     * CAP_PERFMON). A clock that advances in user mode only would sample
     * code that spends its time in system calls too rarely, so it is a
     * later fallback (SPP_MECH_PERF_USER) than the tick-bound CPU timer. */
    attr.exclude_kernel = user_only;
    int fd = (int)syscall(SYS_perf_event_open, &attr, s->tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct f_owner_ex owner = {F_OWNER_TID, s->tid};
    if (fd >= SPP_MAX_FD || fcntl(fd, F_SETOWN_EX, &owner) < 0 ||
        fcntl(fd, F_SETSIG, SPP_SIGNAL) < 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC) < 0) {
        int e = fd >= SPP_MAX_FD ? EMFILE : errno;
        close(fd);
        return -e;
    }
    s->fd = fd;
    atomic_store_explicit(&spp_g.fd_slot[fd], (int16_t)(idx + 1), memory_order_release);
    if (ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) < 0) {
        int e = errno;
        atomic_store(&spp_g.fd_slot[fd], 0);
        close(fd);
        s->fd = -1;
        return -e;
    }
    return 0;
}

/* The CPU-time clock of any thread of this process, by tid: Linux encodes
 * it as (~tid << 3) | CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED, which is what
 * pthread_getcpuclockid returns. */
static clockid_t thread_cpu_clock(pid_t tid)
{
    return (clockid_t)((~(unsigned)tid << 3) | 4 | 2);
}

static int arm_timer(spp_slot *s, int idx, clockid_t clock)
{
    struct sigevent sev;
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SPP_SIGNAL;
    sev.sigev_value.sival_int = idx;
    sev._sigev_un._tid = s->tid;
    if (timer_create(clock, &sev, &s->timer) < 0)
        return -errno;
    struct itimerspec its;
    its.it_interval.tv_sec = (time_t)(spp_g.cfg.interval_ns / 1000000000ull);
    its.it_interval.tv_nsec = (long)(spp_g.cfg.interval_ns % 1000000000ull);
    its.it_value = its.it_interval;
    if (timer_settime(s->timer, 0, &its, NULL) < 0) {
        int e = errno;
        timer_delete(s->timer);
        return -e;
    }
    s->has_timer = 1;
    return 0;
}

clockid_t spp_clock_weight_clock(const spp_slot *s)
{
    return s->mech == SPP_MECH_WALL ? CLOCK_MONOTONIC : thread_cpu_clock(s->tid);
}

int spp_clock_arm(spp_slot *s, int idx, pthread_t thread, int mech)
{
    (void)thread;
    s->fd = -1;
    s->has_timer = 0;
    s->mech = mech;
    struct timespec ts;
    if (clock_gettime(spp_clock_weight_clock(s), &ts) < 0)
        return -errno; /* the thread is gone */
    s->last_clock = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    s->weight_clock = spp_clock_weight_clock(s);
    switch (mech) {
    case SPP_MECH_PERF:
        return arm_perf(s, idx, 0);
    case SPP_MECH_PERF_USER:
        return arm_perf(s, idx, 1);
    case SPP_MECH_CPUTIMER:
        return arm_timer(s, idx, thread_cpu_clock(s->tid));
    case SPP_MECH_WALL:
        return arm_timer(s, idx, CLOCK_MONOTONIC);
    default:
        return -EINVAL;
    }
}

void spp_clock_disarm(spp_slot *s)
{
    if (s->fd >= 0) {
        ioctl(s->fd, PERF_EVENT_IOC_DISABLE, 0);
        if (s->fd < SPP_MAX_FD)
            atomic_store(&spp_g.fd_slot[s->fd], 0);
        close(s->fd);
        s->fd = -1;
    }
    if (s->has_timer) {
        timer_delete(s->timer);
        s->has_timer = 0;
    }
}
