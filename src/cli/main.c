/* main.c - the spprof command: option parsing and dispatch. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../proc/unwind.h"
#include "cli.h"

#define SPPROF_VERSION "0.1.0"

static const char usage[] =
    "usage: spprof record [options] (--pid PID | -- command [args...])\n"
    "       spprof dump [--locals] [--json] [--native] [--subprocesses] --pid PID\n"
    "       spprof top [--rate HZ] [--delay SECS] [--idle] [--native] [--subprocesses] --pid PID\n"
    "\n"
    "record options:\n"
    "  -o, --output PATH      where to write the profile (default spprof-PID.svg)\n"
    "  -f, --format FORMAT    flamegraph (SVG, default), speedscope, collapsed (alias raw),\n"
    "                         chrometrace (Trace Event Format: per-thread timelines)\n"
    "                         pprof (gzipped profile.proto, for go tool pprof)\n"
    "  -r, --rate HZ          samples per second (default 100)\n"
    "  -d, --duration SECS    stop after this long (default: until the program exits or Ctrl-C)\n"
    "  -i, --idle             include threads that are not running\n"
    "  -g, --gil              only the thread holding the GIL\n"
    "  -t, --threads          a root frame per thread\n"
    "  -s, --subprocesses     also sample child Python processes (a root frame per process)\n"
    "  -F, --function         aggregate by function, not by line\n"
    "      --nolineno         no line numbers\n"
    "      --full-filenames   full paths instead of shortened ones\n"
    "      --nonblocking      never pause the program (stacks may be torn)\n"
    "  -n, --native           C frames too, between the Python frames (x86_64, libunwind)\n"
    "  -p, --pid PID          profile a running process\n"
    "\n"
    "dump options:\n"
    "      --locals           each frame's local variables (arguments first)\n"
    "      --json             JSON instead of text\n"
    "  -n, --native           C frames too, between the Python frames\n"
    "  -s, --subprocesses     also each child Python process, one after the other\n"
    "      --full-filenames   full paths instead of shortened ones\n"
    "      --nonblocking      never pause the program (not with --native)\n"
    "\n"
    "top options:\n"
    "  -r, --rate HZ          samples per second (default 100)\n"
    "      --delay SECS       seconds between refreshes (default 1)\n"
    "  -i, --idle             include threads that are not running\n"
    "  -n, --native           count C functions too (own time under their Python caller)\n"
    "  -s, --subprocesses     also sample child Python processes (a PID column)\n"
    "      --full-filenames   full paths instead of shortened ones\n"
    "      --nonblocking      never pause the program (not with --native)\n";

static int parse_double(const char *s, double lo, double hi, const char *what, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        spp_cli_error("%s must be a number from %g to %g, got '%s'", what, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_pid(const char *s, pid_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v <= 0 || v > INT_MAX) {
        spp_cli_error("--pid must be a positive process id, got '%s'", s);
        return -1;
    }
    *out = (pid_t)v;
    return 0;
}

enum { OPT_NOLINENO = 1000, OPT_FULL, OPT_NONBLOCKING, OPT_LOCALS, OPT_JSON, OPT_DELAY };

static const struct option long_opts[] = {
    {"output", required_argument, NULL, 'o'},
    {"format", required_argument, NULL, 'f'},
    {"rate", required_argument, NULL, 'r'},
    {"duration", required_argument, NULL, 'd'},
    {"pid", required_argument, NULL, 'p'},
    {"idle", no_argument, NULL, 'i'},
    {"gil", no_argument, NULL, 'g'},
    {"threads", no_argument, NULL, 't'},
    {"function", no_argument, NULL, 'F'},
    {"subprocesses", no_argument, NULL, 's'},
    {"native", no_argument, NULL, 'n'},
    {"nolineno", no_argument, NULL, OPT_NOLINENO},
    {"full-filenames", no_argument, NULL, OPT_FULL},
    {"nonblocking", no_argument, NULL, OPT_NONBLOCKING},
    {"locals", no_argument, NULL, OPT_LOCALS},
    {"json", no_argument, NULL, OPT_JSON},
    {"delay", required_argument, NULL, OPT_DELAY},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Which commands take an option (by getopt value). */
enum { FOR_RECORD = 1, FOR_DUMP = 2, FOR_TOP = 4, FOR_ALL = 7 };

static int option_commands(int c)
{
    switch (c) {
    case 'p': case 'h': case 's': case 'n': case OPT_NONBLOCKING: return FOR_ALL;
    case 'r': case 'i': return FOR_RECORD | FOR_TOP;
    case OPT_FULL: return FOR_ALL;
    case OPT_LOCALS: case OPT_JSON: return FOR_DUMP;
    case OPT_DELAY: return FOR_TOP;
    default: return FOR_RECORD;
    }
}

static const char *option_name(int c, char *buf, size_t n)
{
    for (const struct option *lo = long_opts; lo->name; lo++)
        if (lo->val == c) {
            snprintf(buf, n, "--%s", lo->name);
            return buf;
        }
    snprintf(buf, n, "-%c", c);
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("spprof %s\n", SPPROF_VERSION);
        return 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "record") && strcmp(cmd, "dump") && strcmp(cmd, "top")) {
        spp_cli_error("unknown command '%s' (record, dump or top)", cmd);
        return 2;
    }
    spp_cli_opts o;
    memset(&o, 0, sizeof(o));
    o.format = "flamegraph";
    o.rate = 100;
    o.delay_ms = 1000;
    optind = 2;
    int c;
    double d;
    int mine = strcmp(cmd, "record") == 0 ? FOR_RECORD : strcmp(cmd, "dump") == 0 ? FOR_DUMP : FOR_TOP;
    while ((c = getopt_long(argc, argv, "+o:f:r:d:p:igtFsnh", long_opts, NULL)) != -1) {
        if (c != '?' && !(option_commands(c) & mine)) {
            char name[32];
            spp_cli_error("%s does not take %s (see spprof --help)", cmd, option_name(c, name, sizeof(name)));
            return 2;
        }
        switch (c) {
        case 'o':
            o.output = optarg;
            break;
        case 'f':
            o.format = optarg;
            break;
        case 'r':
            if (parse_double(optarg, 1, 100000, "--rate", &o.rate) < 0)
                return 2;
            break;
        case 'd':
            if (parse_double(optarg, 0.001, 1e7, "--duration", &o.duration) < 0)
                return 2;
            break;
        case 'p':
            if (parse_pid(optarg, &o.pid) < 0)
                return 2;
            break;
        case 'i': o.idle = 1; break;
        case 'g': o.gil = 1; break;
        case 't': o.threads = 1; break;
        case 'F': o.function = 1; break;
        case 's': o.subprocesses = 1; break;
        case 'n': o.native = 1; break;
        case OPT_NOLINENO: o.nolineno = 1; break;
        case OPT_FULL: o.full_filenames = 1; break;
        case OPT_NONBLOCKING: o.nonblocking = 1; break;
        case OPT_LOCALS: o.locals = 1; break;
        case OPT_JSON: o.json = 1; break;
        case OPT_DELAY:
            if (parse_double(optarg, 0.05, 3600, "--delay", &d) < 0)
                return 2;
            o.delay_ms = (int)(d * 1000);
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind < argc)
        o.argv = argv + optind;
    if (o.pid && o.argv) {
        spp_cli_error("give either --pid or a command, not both");
        return 2;
    }
    if (!o.pid && (!o.argv || strcmp(cmd, "record") != 0)) {
        spp_cli_error(strcmp(cmd, "record") == 0 ? "nothing to profile: give --pid PID or -- command"
                                                 : "%s needs --pid PID",
                      cmd);
        return 2;
    }
    if (o.native && o.nonblocking) {
        spp_cli_error("--native cannot be used with --nonblocking: a thread's C stack can only be "
                      "unwound while the thread is paused");
        return 2;
    }
    if (o.native && !spp_unwind_supported()) {
        spp_cli_error("--native needs libunwind-ptrace, which this spprof was built without "
                      "(install the Debian package libunwind-dev and rebuild spprof; x86_64 only)");
        return 2;
    }
    if (strcmp(o.format, "raw") == 0)
        o.format = "collapsed";
    if (!spp_writer_lookup(o.format)) {
        spp_cli_error("unknown format '%s' (choose flamegraph, speedscope, collapsed, raw, pprof or chrometrace)", o.format);
        return 2;
    }
    if (strcmp(cmd, "record") == 0)
        return spp_cmd_record(&o);
    if (strcmp(cmd, "dump") == 0)
        return spp_cmd_dump(&o);
    return spp_cmd_top(&o);
}
