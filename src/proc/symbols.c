/* symbols.c - native frames named from ELF symbol tables. */
#include "symbols.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "elf.h"
#include "maps.h"

#define CACHE_SIZE 4096      /* direct-mapped by address, a power of two */
#define MAX_MODULES 256      /* symbol tables kept open */

typedef struct module {
    uint64_t base;
    char *path;              /* owned */
    spp_elf elf;
    int ok;                  /* elf is open */
} module;

struct spp_symbols {
    spp_profile *profile;    /* borrowed */
    pid_t pid;
    spp_symbols_locate locate;
    void *ctx;
    uint64_t interp_base;
    spp_native_sym *cache;   /* owned, CACHE_SIZE */
    uint64_t maps_read_ns;   /* CLOCK_MONOTONIC of the last re-reading of the maps */
    module *modules;         /* owned, MAX_MODULES */
    int nmodules;
    /* spp_symbols_for_process: the target's maps, owned */
    spp_maps maps;
};

static uint64_t mix(uint64_t h)
{
    h ^= h >> 31;
    h *= 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    return h;
}

spp_symbols *spp_symbols_new(spp_profile *p, pid_t pid, spp_symbols_locate locate, void *ctx,
                             uint64_t interp_base)
{
    spp_symbols *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->profile = p;
    s->pid = pid;
    s->locate = locate;
    s->ctx = ctx;
    s->interp_base = interp_base;
    s->cache = calloc(CACHE_SIZE, sizeof(*s->cache));
    s->modules = calloc(MAX_MODULES, sizeof(*s->modules));
    if (!s->cache || !s->modules) {
        spp_symbols_free(s);
        return NULL;
    }
    for (int i = 0; i < CACHE_SIZE; i++)
        s->cache[i].frame = SPP_NONE;
    return s;
}

void spp_symbols_free(spp_symbols *s)
{
    if (!s)
        return;
    for (int i = 0; s->modules && i < s->nmodules; i++) {
        if (s->modules[i].ok)
            spp_elf_close(&s->modules[i].elf);
        free(s->modules[i].path);
    }
    free(s->modules);
    free(s->cache);
    spp_maps_free(&s->maps);
    free(s);
}

/* Locates from the target's maps. An address in no mapping, or in an
 * anonymous one, may have been mapped after they were read (a library
 * loaded since: the loader first reserves the whole span anonymously, then
 * maps the file's segments over it): they are read again. (What is found is
 * cached by address, so each new address costs at most one reading.) */
static int locate_in_maps(void *ctx, uint64_t addr, const char **path, uint64_t *base)
{
    spp_symbols *s = ctx;
    const spp_mapping *m = spp_maps_find(&s->maps, addr);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    /* At most every 10 ms: garbage return addresses must not make each
     * sample re-read the maps. */
    if ((!m || m->file == SPP_MAPS_ANON) && now - s->maps_read_ns >= 10000000ull) {
        s->maps_read_ns = now;
        spp_maps fresh;
        if (spp_maps_read(&fresh, s->pid) == 0) {
            spp_maps_free(&s->maps);
            s->maps = fresh;
            m = spp_maps_find(&s->maps, addr);
        }
    }
    if (!m || m->file == SPP_MAPS_ANON)
        return -1;
    *path = s->maps.files[m->file].path;
    *base = s->maps.files[m->file].base;
    return 0;
}

spp_symbols *spp_symbols_for_process(spp_profile *p, pid_t pid, uint64_t interp_base)
{
    spp_symbols *s = spp_symbols_new(p, pid, locate_in_maps, NULL, interp_base);
    if (!s)
        return NULL;
    s->ctx = s;
    if (spp_maps_read(&s->maps, pid) < 0)
        memset(&s->maps, 0, sizeof(s->maps)); /* read on the first address */
    return s;
}

/* The symbol tables of the module at base (opened on first use). */
static const module *module_at(spp_symbols *s, uint64_t base, const char *path)
{
    for (int i = 0; i < s->nmodules; i++)
        if (s->modules[i].base == base && strcmp(s->modules[i].path, path) == 0)
            return &s->modules[i];
    if (s->nmodules == MAX_MODULES)
        return NULL;
    module *m = &s->modules[s->nmodules];
    m->path = strdup(path);
    if (!m->path)
        return NULL;
    m->base = base;
    m->ok = spp_elf_open_target(&m->elf, s->pid, path) == 0;
    s->nmodules++;
    return m;
}

const spp_native_sym *spp_symbols_frame(spp_symbols *s, uint64_t ip, int leaf)
{
    /* A return address points after the call; look up the call itself.
     * The cache is keyed by the address looked up: a leaf at ip and a
     * caller returning to ip may lie in different functions. */
    uint64_t at = leaf ? ip : ip - 1, base = 0;
    spp_native_sym *e = &s->cache[mix(at) & (CACHE_SIZE - 1)];
    if (e->ip == at && e->frame != SPP_NONE)
        return e;
    const char *path = NULL, *file = "", *name = NULL;
    char buf[320];
    if (s->locate(s->ctx, at, &path, &base) == 0 && path) {
        const char *slash = strrchr(path, '/');
        file = slash ? slash + 1 : path;
        const module *m = module_at(s, base, path);
        uint64_t off;
        /* Symbol values are file addresses: a shared object's are relative
         * to where its first segment was meant to load. */
        if (m && m->ok)
            spp_elf_function_at(&m->elf, at - base + (m->elf.type == 3 ? m->elf.load_vaddr : base),
                                &name, &off);
    }
    if (!name) {
        /* No symbol: name it by module and offset, which stays the same from
         * run to run (unlike the address). */
        if (path)
            snprintf(buf, sizeof(buf), "%s+0x%llx", file, (unsigned long long)(at - base));
        else
            snprintf(buf, sizeof(buf), "0x%llx", (unsigned long long)at);
        name = buf;
    }
    spp_frame f = {
        .name = spp_profile_intern_cstr(s->profile, name),
        .file = spp_profile_intern_cstr(s->profile, file),
        .kind = SPP_FRAME_NATIVE,
    };
    if (f.name == SPP_NONE || f.file == SPP_NONE)
        return NULL;
    e->frame = spp_profile_frame(s->profile, &f);
    if (e->frame == SPP_NONE)
        return NULL;
    /* An address in no known file is looked up again next time (its
     * library may be loading now), not cached. */
    e->ip = path ? at : 0;
    e->glue = s->interp_base && path && base == s->interp_base && (name == buf || spp_merge_is_glue(name));
    return e;
}
