/* launch.c - starting the command to profile, and waiting for its Python
 * runtime to come up. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define START_TIMEOUT_S 60

pid_t spp_launch(char **argv)
{
    /* An ignored SIGCHLD (inherited through exec) would have the kernel
     * reap the child: spprof could then not tell that it exited. The
     * program gets the disposition spprof was started with. */
    struct sigaction dfl, inherited;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &dfl, &inherited);
    /* A pipe closed on exec tells the parent whether exec worked. */
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        spp_cli_error("cannot start %s: %s", argv[0], strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        spp_cli_error("cannot start %s: %s", argv[0], strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        sigaction(SIGCHLD, &inherited, NULL);
        execvp(argv[0], argv);
        int e = errno;
        ssize_t w = write(fds[1], &e, sizeof(e));
        (void)w;
        _exit(127);
    }
    close(fds[1]);
    int e = 0;
    ssize_t got;
    do
        got = read(fds[0], &e, sizeof(e));
    while (got < 0 && errno == EINTR);
    close(fds[0]);
    if (got == (ssize_t)sizeof(e)) {
        waitpid(pid, NULL, 0);
        spp_cli_error("cannot run %s: %s", argv[0], strerror(e));
        return -1;
    }
    return pid;
}

spp_session *spp_session_try_python(pid_t pid, int nonblocking, int *why, char *err, size_t n)
{
    /* Probe without pausing; attach for real once Python is up. */
    spp_session *s = spp_session_open(pid, 1, why, err, n);
    if (!s)
        return NULL;
    /* The runtime is up once the first interpreter has a thread, and it is
     * this process's own once that thread's OS id is one of its threads: a
     * child just forked, or vfork()ed and not yet exec'd, still shows its
     * parent's (unknown ids, 0, are trusted). */
    spp_pythread th[16];
    spp_remote_next(spp_session_remote(s));
    spp_reader r = spp_remote_reader(spp_session_remote(s));
    int nth = spp_target_threads(spp_session_target(s), &r, th, 16);
    int ready = 0;
    for (int i = 0; i < nth && !ready; i++) {
        char task[64];
        snprintf(task, sizeof(task), "/proc/%d/task/%d", (int)pid, (int)th[i].tid);
        ready = !th[i].tid || access(task, F_OK) == 0;
    }
    spp_session_close(s);
    if (!ready) {
        *why = SPP_TARGET_NOT_READY;
        snprintf(err, n, "PID %d has not started its Python interpreter", (int)pid);
        return NULL;
    }
    return spp_session_open(pid, nonblocking, why, err, n);
}

/* Reports a launched program that has ended, with its status: 1 if it
 * has. */
static int reported_exit(pid_t pid)
{
    int status;
    if (waitpid(pid, &status, WNOHANG) != pid)
        return 0;
    if (WIFEXITED(status))
        spp_cli_error("the program exited (status %d) before spprof could take a sample",
                      WEXITSTATUS(status));
    else
        spp_cli_error("the program was killed by signal %d before spprof could take a sample",
                      WTERMSIG(status));
    return 1;
}

spp_session *spp_wait_for_python(pid_t pid, int nonblocking, int launched,
                                 volatile sig_atomic_t *stop, double give_up)
{
    struct timespec nap = {0, 5000000};
    time_t start = time(NULL);
    for (;;) {
        if (*stop || (give_up > 0 && difftime(time(NULL), start) >= give_up)) {
            spp_cli_error("stopped before PID %d started its Python interpreter; nothing written",
                          (int)pid);
            return NULL;
        }
        if (launched && reported_exit(pid))
            return NULL;
        int why;
        char err[512];
        spp_session *s = spp_session_try_python(pid, nonblocking, &why, err, sizeof(err));
        if (s)
            return s;
        /* A launched program that exits meanwhile is reported with its
         * status (as a zombie it cannot be read, nor ptrace-seized: EPERM). */
        if (why != SPP_TARGET_NOT_READY &&
            (!launched || (why != SPP_TARGET_NOT_PYTHON && why != SPP_TARGET_NO_PROCESS))) {
            if (!(launched && reported_exit(pid)))
                spp_cli_error("%s", err);
            return NULL;
        }
        /* A launched program may not be Python yet (a shell script, env):
         * keep looking until it is, or exits. */
        if (time(NULL) - start > START_TIMEOUT_S) {
            spp_cli_error("%s (waited %d s)", err, START_TIMEOUT_S);
            return NULL;
        }
        nanosleep(&nap, NULL);
    }
}
