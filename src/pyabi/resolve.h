/* resolve.h - turns raw frames (code object address, instruction) into
 * interned profile frames, caching what each code object says. Shared by
 * the in-process drain and the out-of-process sampler.
 *
 * The caller guarantees that a code object is alive while frames referring
 * to it are resolved, and calls spp_resolver_forget before one is freed
 * (in-process), or accepts the address-reuse risk of a remote target.
 * Not thread-safe; not async-signal-safe. */
#ifndef SPP_RESOLVE_H
#define SPP_RESOLVE_H

#include "../core/profile.h"
#include "walker.h"

typedef struct spp_resolver spp_resolver;

/* o, r and p are borrowed and must outlive the resolver. With lines == 0
 * every frame of a function gets line 0 (aggregate by function). */
spp_resolver *spp_resolver_new(const spp_pyoffsets *o, const spp_reader *r, spp_profile *p,
                               int lines);
/* Re-checks, on every lookup, that a cached code object is still the one
 * at its address (name, file and first line unchanged): for a remote target,
 * whose code objects can die and be replaced without spprof knowing. */
void spp_resolver_validate(spp_resolver *res, int on);
void spp_resolver_free(spp_resolver *res);  /* NULL is a no-op */

/* The profile frame for raw; the "<unknown>" frame when the code object
 * cannot be read; SPP_NONE only when the profile is out of memory. */
uint32_t spp_resolver_frame(spp_resolver *res, const spp_rawframe *raw);

/* Drops what is cached about the code object at this address. */
void spp_resolver_forget(spp_resolver *res, uint64_t code);

/* Marker frames interned at creation. */
uint32_t spp_resolver_marker(const spp_resolver *res, int which);
#define SPP_MARK_UNKNOWN 0
#define SPP_MARK_TRUNCATED 1
#define SPP_MARK_NO_PYTHON 2

#endif
