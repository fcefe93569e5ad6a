/* read.h - reading profiles back: every format spprof writes (speedscope,
 * folded stacks, flame graph SVG, Chrome trace, pprof, gzipped or not),
 * told apart by content, never by file name.
 *
 * A profile read back has one thread per thread the file names (pprof and
 * folded stacks: one), frames of name, file and line, and on each stack
 * either sample counts (folded stacks, SVG, pprof) or, where the file keeps
 * only time (speedscope, Chrome trace), weights in nanoseconds with a count
 * of 0. Thread-root frames written by --threads are marked
 * SPP_FRAME_THREAD. Files are hostile input: sizes, depths and indices are
 * checked, and an error comes back with a message saying what is wrong and
 * where. Not async-signal-safe; thread-safe.
 */
#ifndef SPP_READ_H
#define SPP_READ_H

#include <stddef.h>

#include "../core/profile.h"

#define SPP_READ_MAX_BYTES ((size_t)1 << 30) /* a file, or what it decompresses to */
#define SPP_READ_MAX_DEPTH 4096              /* frames a stack (the writers' cap too) */
#define SPP_READ_MAX_THREADS 4096            /* threads (or processes) a file may name */

enum spp_read_kind {
    SPP_READ_AUTO, SPP_READ_COLLAPSED, SPP_READ_SVG, SPP_READ_SPEEDSCOPE, SPP_READ_CHROMETRACE,
    SPP_READ_PPROF, SPP_READ_GZIP, SPP_READ_JSON,
};

/* Reads len bytes as kind (SPP_READ_AUTO: by content). Returns 0 with *out
 * (owned by the caller) and *format naming what was read ("speedscope",
 * "collapsed", "flamegraph", "chrometrace", "pprof"); SPP_ENOMEM; or
 * SPP_EINVAL with the reason in err. */
int spp_read_buffer(const char *data, size_t len, int kind, spp_profile **out, const char **format,
                    char *err, size_t errlen);

/* Reads the file at path. Returns as spp_read_buffer, or -errno when the file
 * cannot be read (err says why as well). */
int spp_read_file(const char *path, spp_profile **out, const char **format, char *err, size_t errlen);

/* The readers (read_json.c, read_pprof.c), for spp_read_buffer. */
int spp_read_json(const char *data, size_t len, spp_profile *p, const char **format, char *err,
                  size_t errlen);
int spp_read_pprof(const unsigned char *data, size_t len, spp_profile *p, char *err, size_t errlen);

/* Shared by the readers: writes the message into err and returns SPP_EINVAL. */
int spp_read_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Shared by the readers: the frame of name, file and line (file NULL or
 * empty: a frame without a file), or SPP_NONE when out of memory. */
uint32_t spp_read_frame(spp_profile *p, const char *name, size_t nlen, const char *file, size_t flen,
                        int line);

#endif
