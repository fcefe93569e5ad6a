/* out.h - buffered, atomically renamed output files and the escaping every
 * text format needs.
 *
 * A file is written to a temporary name in the target's directory and renamed
 * over the target only by spp_out_commit, so a failed or interrupted write
 * never leaves a half-written profile where a complete one was expected.
 * Errors are sticky: writers write without checking, commit reports.
 * Not thread-safe, not async-signal-safe.
 */
#ifndef SPP_OUT_H
#define SPP_OUT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

typedef struct spp_out {
    FILE *f;       /* owned; NULL for an in-memory buffer */
    char *tmp;     /* owned temporary path */
    char *path;    /* owned final path */
    char *mem;     /* owned buffer when writing to memory */
    size_t len, cap;
    int err;       /* first errno seen, 0 if none */
} spp_out;

/* Opens a temporary file beside path. Returns 0 or -errno. */
int spp_out_open(spp_out *o, const char *path);
/* Starts an in-memory buffer (spp_out_take returns it). */
void spp_out_open_mem(spp_out *o);
/* Flushes, syncs and renames into place. Returns 0 or -errno; on failure the
 * temporary file is removed and the target is untouched. Frees o. */
int spp_out_commit(spp_out *o);
/* Discards everything written. Frees o. */
void spp_out_abort(spp_out *o);
/* For memory outputs: hands the buffer (NUL-terminated) to the caller. */
char *spp_out_take(spp_out *o, size_t *len);

void spp_out_write(spp_out *o, const char *s, size_t n);
void spp_out_puts(spp_out *o, const char *s);
void spp_out_printf(spp_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes s as the inside of a JSON string (no quotes); invalid UTF-8 bytes
 * become U+FFFD. */
void spp_out_json(spp_out *o, const char *s, size_t n);
/* Writes s with XML's special characters escaped; control bytes dropped,
 * invalid UTF-8 as U+FFFD. */
void spp_out_xml(spp_out *o, const char *s, size_t n);
/* Writes s as valid UTF-8 (invalid sequences as U+FFFD), each ASCII byte
 * replaced by what esc_ascii returns for it (NULL: kept; esc_ascii NULL:
 * all kept). buf has room for 8 bytes. */
void spp_out_text(spp_out *o, const char *s, size_t n, const char *(*esc_ascii)(unsigned c, char *buf));

#endif
