/* fuzz_elf.c - libFuzzer target: arbitrary bytes as the ELF file of a
 * target's python or libpython, read by spprof's symbol reader. */
#include <stdint.h>
#include <string.h>

#include "src/proc/elf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    spp_elf e;
    if (spp_elf_parse(&e, data, size) < 0)
        return 0;
    uint64_t value, sz;
    spp_elf_symbol(&e, "_PyRuntime", &value, &sz);
    spp_elf_symbol(&e, "PyCode_Type", &value, NULL);
    spp_elf_section(&e, ".PyRuntime", &value, &sz);
    const char *name;
    uint64_t off;
    for (uint64_t a = 0; a < 0x2000; a += 0x1f3)
        if (spp_elf_function_at(&e, a, &name, &off) == 0)
            (void)strlen(name);
    spp_elf_close(&e);
    return 0;
}
