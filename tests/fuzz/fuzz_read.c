/* fuzz_read.c - libFuzzer target: arbitrary bytes as a profile file, read
 * by spprof diff's readers (JSON, protobuf, inflate, folded stacks, SVG),
 * then diffed against itself and written in both diff formats.
 *
 * The first byte picks the reader (by content, or one format forced) so
 * that every parser is reached without the fuzzer having to find the
 * magic that selects it; the rest is the file. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "src/formats/diff.h"
#include "src/formats/read.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const int kinds[] = {SPP_READ_AUTO, SPP_READ_COLLAPSED, SPP_READ_SVG, SPP_READ_JSON,
                                SPP_READ_PPROF, SPP_READ_GZIP};
    int kind = kinds[data[0] % (sizeof(kinds) / sizeof(kinds[0]))];
    char err[256];
    const char *format;
    spp_profile *p = NULL;
    if (spp_read_buffer((const char *)data + 1, size - 1, kind, &p, &format, err, sizeof(err)) < 0) {
        if (strlen(err) >= sizeof(err))
            abort();
        return 0;
    }
    spp_diff_opts opts;
    spp_diff_opts_default(&opts);
    opts.lines = data[0] & 0x40;
    opts.negate = data[0] & 0x80;
    spp_diff *d = NULL;
    if (spp_diff_new(p, p, &opts, &d) == 0) {
        spp_out o;
        spp_out_open_mem(&o);
        spp_diff_write_collapsed(d, &o);
        spp_diff_write_flamegraph(d, &o, "fuzz");
        free(spp_out_take(&o, NULL));
    }
    spp_diff_free(d);
    spp_profile_free(p);
    return 0;
}
