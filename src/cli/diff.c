/* diff.c - `spprof diff BEFORE AFTER`: reads two profiles of any format
 * spprof writes and writes their differential flame graph (or folded
 * stacks with both counts), atomically to a file or to standard output. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../formats/diff.h"
#include "../formats/read.h"
#include "cli.h"

static spp_profile *load(const char *path, const char **format)
{
    char err[512];
    spp_profile *p = NULL;
    int rc = spp_read_file(path, &p, format, err, sizeof(err));
    if (rc < 0) {
        spp_cli_error("cannot read %s: %s", path, err[0] ? err : "out of memory");
        return NULL;
    }
    if (!spp_profile_samples(p) && !spp_profile_weight(p)) {
        spp_cli_error("cannot diff %s: the profile (%s) has no samples", path, *format);
        spp_profile_free(p);
        return NULL;
    }
    return p;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash && slash[1] ? slash + 1 : path;
}

static int write_diff(const spp_diff *d, spp_out *out, int collapsed, const char *before, const char *after)
{
    if (collapsed)
        return spp_diff_write_collapsed(d, out);
    char title[512];
    snprintf(title, sizeof(title), "spprof diff: %s \xe2\x86\x92 %s", base_name(before), base_name(after));
    return spp_diff_write_flamegraph(d, out, title);
}

int spp_cmd_diff(const spp_cli_opts *o)
{
    const char *before = o->argv[0], *after = o->argv[1], *fb, *fa;
    int collapsed = strcmp(o->format, "collapsed") == 0;
    int to_stdout = !o->output || strcmp(o->output, "-") == 0;
    if (to_stdout && !collapsed && isatty(STDOUT_FILENO)) {
        spp_cli_error("not writing an SVG to the terminal: give -o FILE (or -f collapsed)");
        return 2;
    }
    spp_profile *pb = load(before, &fb), *pa = pb ? load(after, &fa) : NULL;
    spp_diff *d = NULL;
    int status = 1, rc;
    if (!pa)
        goto out;
    spp_diff_opts dopts;
    spp_diff_opts_default(&dopts);
    dopts.lines = o->diff_lines;
    dopts.negate = o->negate;
    if (o->threshold >= 0)
        dopts.threshold = o->threshold;
    if ((rc = spp_diff_new(pb, pa, &dopts, &d)) < 0) {
        spp_cli_error("cannot diff %s and %s: %s", before, after,
                      rc == SPP_ENOMEM ? "out of memory" : "a profile has no samples once merged");
        goto out;
    }
    spp_out out;
    if (to_stdout) {
        spp_out_open_mem(&out);
        rc = write_diff(d, &out, collapsed, before, after);
        size_t len = 0;
        char *text = rc < 0 ? (spp_out_abort(&out), NULL) : spp_out_take(&out, &len);
        if (!text) {
            spp_cli_error("out of memory");
            goto out;
        }
        int ok = fwrite(text, 1, len, stdout) == len && fflush(stdout) == 0;
        int e = errno;
        free(text);
        if (!ok) {
            spp_cli_error("cannot write to standard output: %s", strerror(e));
            goto out;
        }
    } else {
        if ((rc = spp_out_open(&out, o->output)) < 0) {
            spp_cli_error("cannot write %s: %s", o->output, strerror(-rc));
            goto out;
        }
        rc = write_diff(d, &out, collapsed, before, after);
        if (rc < 0) {
            spp_out_abort(&out);
            spp_cli_error("cannot write %s: out of memory", o->output);
            goto out;
        }
        if ((rc = spp_out_commit(&out)) < 0) {
            spp_cli_error("cannot write %s: %s", o->output, strerror(-rc));
            goto out;
        }
        int cb, ca;
        uint64_t tb = spp_diff_total(d, 0, &cb), ta = spp_diff_total(d, 1, &ca);
        fprintf(stderr, "spprof: wrote %s (before: %s, %llu %s; after: %s, %llu %s)\n", o->output, fb,
                (unsigned long long)(cb ? tb : tb / 1000000), cb ? "samples" : "ms", fa,
                (unsigned long long)(ca ? ta : ta / 1000000), ca ? "samples" : "ms");
    }
    status = 0;
out:
    spp_diff_free(d);
    spp_profile_free(pb);
    spp_profile_free(pa);
    return status;
}
