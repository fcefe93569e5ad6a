/* maps.c - parsing /proc/PID/maps. */
#include "maps.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/profile.h"

#define MAX_MAPPINGS 1000000 /* more is not a process spprof can sample */

static int add_file(spp_maps *m, const char *path, uint64_t start, uint32_t *index)
{
    /* Mappings of one file are usually adjacent: look at the latest first. */
    for (uint32_t i = m->nfiles; i-- > 0;)
        if (strcmp(m->files[i].path, path) == 0) {
            if (start < m->files[i].base)
                m->files[i].base = start;
            *index = i;
            return SPP_OK;
        }
    if ((m->nfiles & (m->nfiles - 1)) == 0) {
        uint32_t cap = m->nfiles ? m->nfiles * 2 : 16;
        spp_mapped_file *f = realloc(m->files, cap * sizeof(*f));
        if (!f)
            return SPP_ENOMEM;
        m->files = f;
    }
    char *copy = strdup(path);
    if (!copy)
        return SPP_ENOMEM;
    m->files[m->nfiles].path = copy;
    m->files[m->nfiles].base = start;
    *index = m->nfiles++;
    return SPP_OK;
}

int spp_maps_read(spp_maps *m, pid_t pid)
{
    memset(m, 0, sizeof(*m));
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    int rc = SPP_OK;
    char line[PATH_MAX + 256];
    while (fgets(line, sizeof(line), f) && m->nmaps < MAX_MAPPINGS) {
        unsigned long long start, end, off;
        char perms[8];
        int pos = 0;
        if (sscanf(line, "%llx-%llx %7s %llx %*s %*s %n", &start, &end, perms, &off, &pos) < 4 ||
            !pos || start >= end)
            continue;
        char *file = line + pos;
        file[strcspn(file, "\n")] = '\0';
        /* Anonymous, [heap], [vdso]...: no file to read symbols from. */
        uint32_t index = SPP_MAPS_ANON;
        if (file[0] == '/' && (rc = add_file(m, file, start, &index)) < 0)
            break;
        if ((m->nmaps & (m->nmaps - 1)) == 0) {
            uint32_t cap = m->nmaps ? m->nmaps * 2 : 64;
            spp_mapping *v = realloc(m->maps, cap * sizeof(*v));
            if (!v) {
                rc = SPP_ENOMEM;
                break;
            }
            m->maps = v;
        }
        m->maps[m->nmaps++] = (spp_mapping){start, end, index, perms[2] == 'x', perms[1] == 'w'};
    }
    fclose(f);
    if (rc < 0)
        spp_maps_free(m);
    return rc;
}

void spp_maps_free(spp_maps *m)
{
    for (uint32_t i = 0; i < m->nfiles; i++)
        free(m->files[i].path);
    free(m->files);
    free(m->maps);
    memset(m, 0, sizeof(*m));
}

const spp_mapping *spp_maps_find(const spp_maps *m, uint64_t addr)
{
    /* The kernel lists mappings in address order. */
    uint32_t lo = 0, hi = m->nmaps;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (addr < m->maps[mid].start)
            hi = mid;
        else if (addr >= m->maps[mid].end)
            lo = mid + 1;
        else
            return &m->maps[mid];
    }
    return NULL;
}
