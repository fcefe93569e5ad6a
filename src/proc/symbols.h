/* symbols.h - names native code addresses for profiles: the function that
 * contains each one (from its module's own ELF symbol tables, so static
 * functions too), with the module as the file, cached by address. Shared
 * by the in-process drain thread and the spprof command; how an address is
 * matched to its module is the caller's (dladdr in-process, /proc/PID/maps
 * for another process). Not thread-safe; not async-signal-safe. */
#ifndef SPP_SYMBOLS_H
#define SPP_SYMBOLS_H

#include <stdint.h>
#include <sys/types.h>

#include "../core/profile.h"
#include "../pyabi/merge.h"

/* Finds the module holding addr: its path (borrowed until the next call)
 * and the address its first byte is mapped at. Returns 0, or < 0 when no
 * file holds addr. */
typedef int (*spp_symbols_locate)(void *ctx, uint64_t addr, const char **path, uint64_t *base);

typedef struct spp_symbols spp_symbols;

/* p is borrowed and must outlive the result. Paths name files as process
 * pid sees them (0: this process). interp_base is the base of the module
 * running the evaluation loop: its calling machinery, and its functions
 * without a symbol, are glue (0: none is). NULL when out of memory. */
spp_symbols *spp_symbols_new(spp_profile *p, pid_t pid, spp_symbols_locate locate, void *ctx,
                             uint64_t interp_base);
/* spp_symbols_new for another process, locating modules from its
 * /proc/PID/maps (read again when an address is in none of its mappings). */
spp_symbols *spp_symbols_for_process(spp_profile *p, pid_t pid, uint64_t interp_base);
void spp_symbols_free(spp_symbols *s);  /* NULL is a no-op */

/* The native frame at ip (leaf: the instruction running; else a return
 * address, looked up at the call before it). NULL when out of memory. */
const spp_native_sym *spp_symbols_frame(spp_symbols *s, uint64_t ip, int leaf);

#endif
