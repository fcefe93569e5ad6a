/* remote.h - reading another process's memory with process_vm_readv,
 * through a small page cache that lives for one sample (spp_remote_next)
 * so that a frame chain costs a few system calls, not one per field. */
#ifndef SPP_REMOTE_H
#define SPP_REMOTE_H

#include <sys/types.h>

#include "../pyabi/reader.h"

#define SPP_REMOTE_PAGES 256

typedef struct spp_remote_page {
    uint64_t addr;   /* page address */
    uint64_t gen;    /* valid while equal to the reader's gen */
    uint32_t len;    /* bytes readable from addr (a page may be cut short) */
    unsigned char data[4096];
} spp_remote_page;

typedef struct spp_remote {
    pid_t pid;
    uint64_t gen;
    spp_remote_page *pages;  /* owned, SPP_REMOTE_PAGES */
    uint64_t reads;          /* process_vm_readv calls made */
    int last_errno;          /* of the last failed read */
} spp_remote;

int spp_remote_init(spp_remote *r, pid_t pid);
void spp_remote_free(spp_remote *r);
/* Forgets cached pages: the target may have changed since. */
void spp_remote_next(spp_remote *r);
/* A reader over r (r must outlive it). */
spp_reader spp_remote_reader(spp_remote *r);
/* One uncached read. Returns 0, or -errno. */
int spp_remote_read_raw(pid_t pid, uint64_t addr, void *buf, size_t n);

#endif
