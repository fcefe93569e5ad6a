/* maps.h - another process's file mappings, from /proc/PID/maps: which
 * file holds an address, and where each file's first byte is mapped (what
 * ELF symbol addresses are relative to). Not thread-safe; not
 * async-signal-safe. */
#ifndef SPP_MAPS_H
#define SPP_MAPS_H

#include <stdint.h>
#include <sys/types.h>

#define SPP_MAPS_ANON UINT32_MAX   /* a mapping of no file (heap, stack, JIT...) */

typedef struct spp_mapping {
    uint64_t start, end;   /* [start, end) */
    uint32_t file;         /* index into spp_maps.files, or SPP_MAPS_ANON */
    int exec;              /* mapped executable */
    int write;             /* mapped writable (data, bss) */
} spp_mapping;

typedef struct spp_mapped_file {
    char *path;            /* owned; the path inside the target's file system */
    uint64_t base;         /* lowest address any part of it is mapped at */
} spp_mapped_file;

typedef struct spp_maps {
    spp_mapping *maps;     /* owned, sorted by address */
    uint32_t nmaps;
    spp_mapped_file *files;/* owned */
    uint32_t nfiles;
} spp_maps;

/* Reads the mappings of pid. Returns 0, SPP_ENOMEM, or -errno
 * (ENOENT/ESRCH: no such process; EACCES/EPERM: not allowed). */
int spp_maps_read(spp_maps *m, pid_t pid);
void spp_maps_free(spp_maps *m);   /* leaves m empty; an empty m is a no-op */

/* The mapping holding addr, or NULL. */
const spp_mapping *spp_maps_find(const spp_maps *m, uint64_t addr);

#endif
