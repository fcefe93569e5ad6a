/* writer.c - picks a writer by format name and writes a file atomically. */
#include "formats.h"

#include <string.h>

void spp_write_opts_default(spp_write_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->lines = 1;
}

static const struct {
    const char *name;
    spp_writer_fn fn;
} writers[] = {
    {"speedscope", spp_write_speedscope},
    {"collapsed", spp_write_collapsed},
    {"raw", spp_write_collapsed},
    {"flamegraph", spp_write_flamegraph},
    {"svg", spp_write_flamegraph},
    {"chrometrace", spp_write_chrometrace},
    {"pprof", spp_write_pprof},
};

spp_writer_fn spp_writer_lookup(const char *format)
{
    for (size_t i = 0; i < sizeof(writers) / sizeof(writers[0]); i++)
        if (strcmp(writers[i].name, format) == 0)
            return writers[i].fn;
    return NULL;
}

int spp_write_file(const spp_profile *p, const char *path, const char *format,
                   const spp_write_opts *opts)
{
    spp_writer_fn fn = spp_writer_lookup(format);
    if (!fn)
        return SPP_EINVAL;
    spp_write_opts defaults;
    if (!opts) {
        spp_write_opts_default(&defaults);
        opts = &defaults;
    }
    spp_out o;
    int rc = spp_out_open(&o, path);
    if (rc < 0)
        return rc;
    rc = fn(p, &o, opts);
    if (rc < 0) {
        spp_out_abort(&o);
        return rc;
    }
    return spp_out_commit(&o);
}

const char *spp_short_file(const char *path, int full)
{
    if (full || path[0] != '/')
        return path;
    static const char *const markers[] = {"/site-packages/", "/dist-packages/"};
    for (size_t i = 0; i < 2; i++) {
        const char *m = strstr(path, markers[i]);
        if (m)
            return m + strlen(markers[i]);
    }
    /* The standard library: ".../lib/python3.11/json/decoder.py" -> "json/decoder.py". */
    const char *lib = strstr(path, "/lib/python");
    if (lib) {
        const char *slash = strchr(lib + 11, '/');
        if (slash && slash[1])
            return slash + 1;
    }
    /* A program's own file: its name, with its directory when the name
     * alone says little ("pkg/__init__.py"). */
    const char *base = strrchr(path, '/') + 1;
    if (base > path + 1 && base[0] == '_' && base[1] == '_') {
        const char *dir = base - 2;
        while (dir > path && *dir != '/')
            dir--;
        return dir + 1;
    }
    return base;
}

void spp_write_label(spp_out *o, const spp_profile *p, const spp_frame *f,
                     const spp_write_opts *opts, spp_escape_fn esc)
{
    size_t nlen, flen;
    const char *name = spp_profile_string(p, f->name, &nlen);
    const char *file = spp_profile_string(p, f->file, &flen);
    if (!esc)
        esc = spp_out_write;
    esc(o, name, nlen);
    if (f->kind == SPP_FRAME_THREAD || f->kind == SPP_FRAME_OTHER || !flen)
        return;
    const char *shown = spp_short_file(file, opts->full_filenames);
    spp_out_puts(o, " (");
    esc(o, shown, flen - (size_t)(shown - file));
    if (opts->lines && f->line > 0)
        spp_out_printf(o, ":%d", f->line);
    spp_out_puts(o, ")");
}
