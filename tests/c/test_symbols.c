/* test_symbols.c - native frame names are cached by the address looked up:
 * a return address ip names the function holding ip - 1, the leaf at the
 * same ip the function holding ip itself, and neither answer may be served
 * for the other. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#include "../../src/proc/elf.h"
#include "../../src/proc/symbols.h"


int spp_symbols_test_marker(int x);
int spp_symbols_test_marker(int x)
{
    return x * 5 + 2;
}

static const char *name_of(spp_profile *p, const spp_native_sym *sym)
{
    size_t len;
    return sym ? spp_profile_string(p, spp_profile_frame_at(p, sym->frame)->name, &len) : "";
}

int main(void)
{
    spp_profile *p = spp_profile_new(0);
    REQUIRE(p);
    spp_symbols *s = spp_symbols_for_process(p, getpid(), 0);
    REQUIRE(s);
    uint64_t ip = (uint64_t)(uintptr_t)&spp_symbols_test_marker;
    /* As a return address first: names whatever precedes the function. */
    const char *caller = name_of(p, spp_symbols_frame(s, ip, 0));
    REQUIRE(strcmp(caller, "spp_symbols_test_marker") != 0);
    const char *leaf = name_of(p, spp_symbols_frame(s, ip, 1));
    REQUIRE(strcmp(leaf, "spp_symbols_test_marker") == 0);
    /* and both stay cached as themselves */
    REQUIRE(strcmp(name_of(p, spp_symbols_frame(s, ip, 0)), caller) == 0);
    REQUIRE(strcmp(name_of(p, spp_symbols_frame(s, ip + 1, 0)), "spp_symbols_test_marker") == 0);
    spp_symbols_free(s);
    spp_profile_free(p);
    printf("ok\n");
    return spp_symbols_test_marker(0) == 2 ? 0 : 1;
}
