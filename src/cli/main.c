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
    "       spprof diff [options] BEFORE AFTER\n"
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
    "      --upload URL       send the profile to a Pyroscope server's /ingest (http:// only)\n"
    "      --app-name NAME    the application's name there (default: the script's or command's)\n"
    "      --tag KEY=VALUE    a tag of the uploaded profiles (repeatable)\n"
    "      --upload-format F  pprof (default) or folded\n"
    "      --every SECS       upload each SECS window while recording (default: once, at the end)\n"
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
    "      --nonblocking      never pause the program (not with --native)\n"
    "\n"
    "diff options (BEFORE and AFTER: profiles in any format spprof writes):\n"
    "  -o, --output PATH      where to write the diff (default: standard output)\n"
    "  -f, --format FORMAT    flamegraph (SVG coloured by change, default) or collapsed\n"
    "                         ('stack before after' lines, before scaled to after's total)\n"
    "      --lines            match frames by line too (default: by function and file)\n"
    "      --negate           draw BEFORE's widths (shows what disappeared)\n"
    "      --threshold PP     changes smaller than this many percentage points are grey (0.5)\n";

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

enum {
    OPT_NOLINENO = 1000, OPT_FULL, OPT_NONBLOCKING, OPT_LOCALS, OPT_JSON, OPT_DELAY,
    OPT_UPLOAD, OPT_APP_NAME, OPT_TAG, OPT_UPLOAD_FORMAT, OPT_EVERY, OPT_LINES, OPT_NEGATE, OPT_THRESHOLD
};

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
    {"upload", required_argument, NULL, OPT_UPLOAD},
    {"app-name", required_argument, NULL, OPT_APP_NAME},
    {"tag", required_argument, NULL, OPT_TAG},
    {"upload-format", required_argument, NULL, OPT_UPLOAD_FORMAT},
    {"every", required_argument, NULL, OPT_EVERY},
    {"lines", no_argument, NULL, OPT_LINES},
    {"negate", no_argument, NULL, OPT_NEGATE},
    {"threshold", required_argument, NULL, OPT_THRESHOLD},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Which commands take an option (by getopt value). */
enum { FOR_RECORD = 1, FOR_DUMP = 2, FOR_TOP = 4, FOR_ALL = 7, FOR_DIFF = 8 };

static int option_commands(int c)
{
    switch (c) {
    case 'h': return FOR_ALL | FOR_DIFF;
    case 'o': case 'f': return FOR_RECORD | FOR_DIFF;
    case OPT_LINES: case OPT_NEGATE: case OPT_THRESHOLD: return FOR_DIFF;
    case 'p': case 's': case 'n': case OPT_NONBLOCKING: return FOR_ALL;
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
    if (strcmp(cmd, "record") && strcmp(cmd, "dump") && strcmp(cmd, "top") && strcmp(cmd, "diff")) {
        spp_cli_error("unknown command '%s' (record, dump, top or diff)", cmd);
        return 2;
    }
    spp_cli_opts o;
    memset(&o, 0, sizeof(o));
    o.format = "flamegraph";
    o.rate = 100;
    o.delay_ms = 1000;
    o.upload.format = "pprof";
    int upload_given = 0; /* an upload option other than --upload itself */
    o.threshold = -1;
    optind = 2;
    int c;
    double d;
    char err[512];
    int mine = strcmp(cmd, "record") == 0 ? FOR_RECORD : strcmp(cmd, "dump") == 0 ? FOR_DUMP
             : strcmp(cmd, "top") == 0 ? FOR_TOP : FOR_DIFF;
    /* record stops at the command to launch; diff takes its files and
     * options in any order (spprof diff a.json b.json -o d.svg). */
    const char *optstring = mine == FOR_DIFF ? "o:f:r:d:p:igtFsnh" : "+o:f:r:d:p:igtFsnh";
    while ((c = getopt_long(argc, argv, optstring, long_opts, NULL)) != -1) {
        if (c != '?' && !(option_commands(c) & mine)) {
            char name[32];
            spp_cli_error("%s does not take %s (see spprof --help)", cmd, option_name(c, name, sizeof(name)));
            return 2;
        }
        if (c == OPT_APP_NAME || c == OPT_TAG || c == OPT_UPLOAD_FORMAT || c == OPT_EVERY)
            upload_given = c;
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
        case OPT_UPLOAD:
            o.upload.url = optarg;
            break;
        case OPT_APP_NAME:
            if (spp_upload_check_app(optarg, err, sizeof(err)) < 0) {
                spp_cli_error("%s", err);
                return 2;
            }
            o.upload.app_name = optarg;
            break;
        case OPT_TAG:
            if (spp_upload_check_tag(optarg, err, sizeof(err)) < 0) {
                spp_cli_error("%s", err);
                return 2;
            }
            if (o.upload.ntags == SPP_UPLOAD_MAX_TAGS) {
                spp_cli_error("at most %d --tag options", SPP_UPLOAD_MAX_TAGS);
                return 2;
            }
            o.upload.tags[o.upload.ntags++] = optarg;
            break;
        case OPT_UPLOAD_FORMAT:
            if (strcmp(optarg, "pprof") && strcmp(optarg, "folded")) {
                spp_cli_error("--upload-format must be pprof or folded, got '%s'", optarg);
                return 2;
            }
            o.upload.format = optarg;
            break;
        case OPT_EVERY:
            if (parse_double(optarg, 0.1, 86400, "--every", &o.upload.every) < 0)
                return 2;
            break;
        case OPT_LINES: o.diff_lines = 1; break;
        case OPT_NEGATE: o.negate = 1; break;
        case OPT_THRESHOLD:
            if (parse_double(optarg, 0, 100, "--threshold", &o.threshold) < 0)
                return 2;
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
    if (mine == FOR_DIFF) {
        if (argc - optind != 2) {
            spp_cli_error("diff needs two profiles, BEFORE and AFTER (got %d)", argc - optind);
            return 2;
        }
        if (strcmp(o.format, "raw") == 0)
            o.format = "collapsed";
        else if (strcmp(o.format, "svg") == 0)
            o.format = "flamegraph";
        if (strcmp(o.format, "collapsed") != 0 && strcmp(o.format, "flamegraph") != 0) {
            spp_cli_error("diff writes flamegraph or collapsed, not '%s'", o.format);
            return 2;
        }
        if (o.negate && strcmp(o.format, "collapsed") == 0) {
            spp_cli_error("--negate only changes the flame graph (swap BEFORE and AFTER for the folded stacks)");
            return 2;
        }
        return spp_cmd_diff(&o);
    }
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
    if (upload_given && !o.upload.url) {
        char name[32];
        spp_cli_error("%s is for uploads: give --upload URL too", option_name(upload_given, name, sizeof(name)));
        return 2;
    }
    if (o.upload.url) {
        spp_url u;
        if (spp_url_parse(o.upload.url, &u, err, sizeof(err)) < 0) {
            spp_cli_error("--upload %s", err);
            return 2;
        }
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
