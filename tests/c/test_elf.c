/* test_elf.c - spp_elf_open keeps what it reads: the file it opened may be
 * truncated or rewritten afterwards (a library replaced in place) without
 * spprof reading through a stale mapping (which would raise SIGBUS). Run
 * with argv[1] = a scratch copy of this very executable. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#include "../../src/proc/elf.h"


int spp_elf_test_marker(int x);
int spp_elf_test_marker(int x)
{
    return x * 3 + 1;
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 2);
    spp_elf e;
    REQUIRE(spp_elf_open(&e, argv[1]) == 0);
    uint64_t value = 0, size = 0;
    REQUIRE(spp_elf_symbol(&e, "spp_elf_test_marker", &value, &size) == 0);
    REQUIRE(value != 0 && size != 0);

    /* Emptied under us: every lookup still answers from the copy. */
    REQUIRE(truncate(argv[1], 0) == 0);
    const char *name = NULL;
    uint64_t off = 1;
    REQUIRE(spp_elf_function_at(&e, value + 1, &name, &off) == 0);
    REQUIRE(strcmp(name, "spp_elf_test_marker") == 0 && off == 1);
    uint64_t again = 0;
    REQUIRE(spp_elf_symbol(&e, "main", &again, NULL) == 0 && again != 0);
    uint64_t addr, sz;
    REQUIRE(spp_elf_section(&e, ".text", &addr, &sz) == 0 && sz != 0);
    REQUIRE(spp_elf_section(&e, ".no-such-section", &addr, &sz) != 0);
    spp_elf_close(&e);

    /* An empty file, and a missing one, are errors. */
    REQUIRE(spp_elf_open(&e, argv[1]) != 0);
    REQUIRE(spp_elf_open(&e, "/nonexistent/spprof-test") != 0);
    printf("ok\n");
    return spp_elf_test_marker(0) == 1 ? 0 : 1;
}
