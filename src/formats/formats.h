/* formats.h - the output writers, one per file, all reading the core model.
 *
 * Each writer streams a whole profile into an spp_out; spp_write_file picks
 * the writer by name and handles the atomic temporary-file-and-rename.
 * Not thread-safe (the profile must not change while it is written).
 */
#ifndef SPP_FORMATS_H
#define SPP_FORMATS_H

#include "../core/profile.h"
#include "out.h"

typedef struct spp_write_opts {
    int lines;           /* include line numbers in frame names (default 1) */
    int full_filenames;  /* keep full paths instead of shortening them */
    int thread_roots;    /* add the thread as the root frame (collapsed, svg) */
} spp_write_opts;

void spp_write_opts_default(spp_write_opts *o);

int spp_write_speedscope(const spp_profile *p, spp_out *o, const spp_write_opts *opts);
int spp_write_collapsed(const spp_profile *p, spp_out *o, const spp_write_opts *opts);
/* The SVG also embeds the folded stacks it was drawn from (what
 * spp_write_collapsed writes with the same options), in
 * <metadata id="spprof-folded">, so that it can be read back (read.h). */
int spp_write_flamegraph(const spp_profile *p, spp_out *o, const spp_write_opts *opts);

/* A flame graph drawn otherwise (spprof diff): each box's fill and the text
 * after its label in the tooltip come from callbacks given the box's stack
 * (the first trie node merged into the box; the root box gets the first
 * thread's root). */
typedef struct spp_fg_style {
    void *ctx;
    uint32_t (*color)(void *ctx, uint32_t stack);            /* 0xRRGGBB */
    /* Writes at most n bytes (NUL-terminated) shown as " (text)"; no
     * parentheses inside, as the script finds the label by them. */
    void (*details)(void *ctx, uint32_t stack, char *buf, size_t n);
    const char *subtitle;    /* replaces the sample count line when not NULL */
    int no_stacks;           /* leave the folded stacks out */
} spp_fg_style;
int spp_write_flamegraph_styled(const spp_profile *p, spp_out *o, const spp_write_opts *opts,
                                const spp_fg_style *style);
/* Needs the profile's timeline (spp_profile_keep_timeline); without it, or
 * past its budget, the file says that its timeline is partial. */
int spp_write_chrometrace(const spp_profile *p, spp_out *o, const spp_write_opts *opts);

/* gzip-compressed profile.proto; thread_roots is ignored (threads are labels). */
int spp_write_pprof(const spp_profile *p, spp_out *o, const spp_write_opts *opts);

/* Format names accepted by spp_write_file: "speedscope", "collapsed" (alias
 * "raw"), "flamegraph" (alias "svg"), "chrometrace", "pprof". Returns NULL
 * for an unknown name. */
typedef int (*spp_writer_fn)(const spp_profile *, spp_out *, const spp_write_opts *);
spp_writer_fn spp_writer_lookup(const char *format);

/* Writes p to path atomically. Returns 0, SPP_EINVAL for an unknown format,
 * or -errno from the file system (path errors). */
int spp_write_file(const spp_profile *p, const char *path, const char *format,
                   const spp_write_opts *opts);

/* Frame labels shared by the text formats. */

/* The file name as shown: the full path, or shortened to what follows
 * site-packages/, dist-packages/ or the last "lib/pythonX.Y/" component. */
const char *spp_short_file(const char *path, int full);

/* Writes "name (file:line)" (or without ":line") with esc escaping the parts
 * (NULL writes them raw). */
typedef void (*spp_escape_fn)(spp_out *, const char *, size_t);
void spp_write_label(spp_out *o, const spp_profile *p, const spp_frame *f,
                     const spp_write_opts *opts, spp_escape_fn esc);

#endif
