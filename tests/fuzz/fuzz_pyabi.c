/* fuzz_pyabi.c - libFuzzer target: arbitrary bytes as another process's
 * memory, read by the frame walker, the code-object and line-table readers,
 * the resolver, the debug-offsets validator and the thread-name reader
 * (dicts, instance attributes), as the spprof command reads a target. Nothing may crash, hang or allocate without bound.
 *
 * Input: byte 0 picks a layout (a compiled row, or the debug offsets found
 * in the input itself); bytes 1-4 the thread state and first frame offsets;
 * the whole input is the memory mapped at BASE. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "src/core/profile.h"
#include "src/pyabi/attrs.h"
#include "src/pyabi/offsets.h"
#include "src/pyabi/resolve.h"
#include "src/pyabi/walker.h"

#define BASE 0x10000ull

typedef struct image {
    const uint8_t *data;
    size_t size;
} image;

static int image_read(void *ctx, uint64_t addr, void *buf, size_t n)
{
    const image *im = ctx;
    if (addr < BASE || addr - BASE > im->size || n > im->size - (addr - BASE))
        return SPP_EINVAL;
    memcpy(buf, im->data + (addr - BASE), n);
    return SPP_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    image im = {data, size};
    spp_reader r = {image_read, &im};
    spp_pyoffsets o;
    unsigned pick = data[0] % (spp_pyoffsets_table_len + 1);
    if (pick < spp_pyoffsets_table_len) {
        o = spp_pyoffsets_table[pick];
    } else {
        int guessed;
        if (spp_pyoffsets_from_debug(&o, data + 8, size - 8, &guessed) < 0)
            return 0;
    }
    uint64_t tstate = BASE + ((uint64_t)data[1] | (uint64_t)data[2] << 8) % size;
    uint64_t frame = 0, below = SPP_ANY_FRAME;
    if (spp_thread_frame(&o, &r, tstate, &frame, &below) < 0)
        frame = BASE + ((uint64_t)data[3] | (uint64_t)data[4] << 8) % size;

    spp_rawframe raw[64];
    uint8_t entries[64];
    int truncated;
    int flags = data[5] & 1 ? SPP_WALK_RUNNING : 0;
    uint64_t code_type = data[5] & 2 ? BASE + data[6] : 0;
    uint64_t addrs[64];
    int n = spp_walk(&o, &r, frame, below, flags, code_type, raw, entries, addrs, 64, &truncated);
    if (n < 0)
        n = 0;
    if (n == 0) { /* read something as a code object anyway */
        raw[0].code = BASE + data[7];
        raw[0].instr = BASE + data[6];
        n = 1;
    }

    spp_profile *p = spp_profile_new(1 << 20);
    spp_resolver *res = p ? spp_resolver_new(&o, &r, p, 1) : NULL;
    if (res) {
        spp_resolver_validate(res, data[5] & 4);
        for (int i = 0; i < n; i++)
            spp_resolver_frame(res, &raw[i]);
        for (int i = 0; i < n; i++) /* again: the cached path */
            spp_resolver_frame(res, &raw[i]);
    }
    for (int i = 0; i < n && i < 4; i++) {
        spp_code c;
        if (spp_code_read(&o, &r, raw[i].code, &c) == 0) {
            spp_code_line(&o, &c, raw[i].instr);
            for (int64_t a = -2; a < 64; a += 7)
                spp_code_addr2line(&o, &c, a);
            spp_code_clear(&c);
        }
    }
    char buf[256];
    spp_read_str(&o, &r, BASE + data[7], buf, sizeof(buf));
    /* The runtime and an object anywhere in the input; without known types
     * (as when the target's symbols are stripped), so nothing is filtered
     * by type before its layout is read. */
    spp_pytypes types = {0};
    spp_thread_name names[8];
    uint64_t value;
    spp_thread_names(&o, &r, &types, BASE + ((uint64_t)data[3] << 4) % size, names, 8);
    spp_object_attr(&o, &r, &types, BASE + ((uint64_t)data[4] << 3) % size, "_name", &value);
    spp_resolver_free(res);
    spp_profile_free(p);
    return 0;
}
