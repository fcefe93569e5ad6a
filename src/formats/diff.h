/* diff.h - differential profiles: two profiles (a baseline BEFORE and an
 * AFTER) merged frame by frame, each stack's share of its profile's total
 * compared, written as a differential flame graph or as folded stacks with
 * two counts (difffolded.pl's format).
 *
 * Frames match by function name and file (the file shortened as the text
 * formats show it, so full and shortened paths match), and by line only
 * when asked (a line that moved is then not a change). Threads are merged
 * (thread ids differ from run to run): thread roots written by --threads
 * are left out, and the process roots of --subprocesses lose their PID. A
 * profile's measure is its sample count, or its time where the file keeps
 * only time (speedscope, Chrome trace). Not thread-safe; not
 * async-signal-safe.
 */
#ifndef SPP_DIFF_H
#define SPP_DIFF_H

#include "formats.h"

typedef struct spp_diff_opts {
    int lines;          /* match frames by line too (default 0: by function) */
    int negate;         /* flame graph widths from BEFORE (default: from AFTER) */
    double threshold;   /* percentage points below which a change shows as none */
} spp_diff_opts;

void spp_diff_opts_default(spp_diff_opts *o);

typedef struct spp_diff spp_diff;

/* Merges the two profiles (borrowed: only read here). Returns 0 with *out,
 * SPP_ENOMEM, or SPP_EINVAL when either profile has nothing in it. */
int spp_diff_new(const spp_profile *before, const spp_profile *after, const spp_diff_opts *opts,
                 spp_diff **out);
void spp_diff_free(spp_diff *d);   /* NULL is a no-op */

/* Totals in each profile's measure; *counts says whether it is samples
 * (else nanoseconds). */
uint64_t spp_diff_total(const spp_diff *d, int after, int *counts);

/* "stack before after" lines sorted by stack: after is AFTER's measure as
 * read, before is BEFORE's scaled to AFTER's total and rounded (what
 * difffolded.pl -n does), so the two columns compare share for share. */
int spp_diff_write_collapsed(const spp_diff *d, spp_out *o);

/* An SVG flame graph of AFTER's stacks (BEFORE's with negate), each box
 * red where its share of the samples (itself and below) grew, blue where it
 * shrank, by how much, and grey where it changed less than the threshold;
 * the tooltip gives both shares and the change in percentage points.
 * title goes above it. */
int spp_diff_write_flamegraph(const spp_diff *d, spp_out *o, const char *title);

#endif
