/* remote.h - reading another process's memory with process_vm_readv,
 * through a small page cache that lives for one sample (spp_remote_next)
 * so that a frame chain costs a few system calls, not one per field. */
#ifndef SPP_REMOTE_H
#define SPP_REMOTE_H

#include <sys/types.h>

#include "../pyabi/reader.h"

#define SPP_REMOTE_PAGES 256
#define SPP_SNAP_PAGES 256   /* pages a snapshot can hold */
#define SPP_SNAP_SLOTS 512   /* its lookup tables: a power of two > SPP_SNAP_PAGES */

typedef struct spp_remote_page {
    uint64_t addr;   /* page address */
    uint64_t gen;    /* valid while equal to the reader's gen */
    uint32_t len;    /* bytes readable from addr (a page may be cut short) */
    uint64_t used;   /* the gen it was last listed for prefetching in (or taken
                      * for a prefetch: reset when read) */
    unsigned char data[4096];
} spp_remote_page;

/* A snapshot: pages read together in one process_vm_readv (more only when
 * one cannot be read), so that what they hold was usually copied within a
 * few microseconds of each other (the kernel copies them one at a time, and
 * can be preempted in between), not one system call apart each. While one
 * is taken, reads come from it where they can, and every page read is
 * logged: spp_remote_snapshot_holds tells which of those it held. */
typedef struct spp_snapshot {
    int on;                  /* reads are served from the snapshot */
    int n;                   /* pages in it */
    int logging;             /* pages read are logged */
    int nlog;
    uint64_t addr[SPP_SNAP_PAGES];
    uint32_t len[SPP_SNAP_PAGES];
    uint64_t log[SPP_SNAP_PAGES];
    int16_t slot[SPP_SNAP_SLOTS];    /* page -> index into addr, -1 for none */
    int16_t logslot[SPP_SNAP_SLOTS]; /* page -> index into log, -1 for none */
    int16_t twin[SPP_SNAP_PAGES];    /* index of a page's earlier copy, -1 for none */
    unsigned char (*data)[4096];     /* owned, SPP_SNAP_PAGES (allocated by the first snapshot) */
} spp_snapshot;

typedef struct spp_remote {
    pid_t pid;
    uint64_t gen;
    spp_remote_page *pages;  /* owned, SPP_REMOTE_PAGES */
    uint64_t reads;          /* process_vm_readv calls made */
    int last_errno;          /* of the last failed read */
    spp_snapshot snap;
    /* spp_remote_prefetch: the cached pages read since spp_remote_next, to
     * be read together by the next one. */
    int prefetch;
    int nused;
    uint64_t used[SPP_SNAP_PAGES];
} spp_remote;

int spp_remote_init(spp_remote *r, pid_t pid);
void spp_remote_free(spp_remote *r);
/* Forgets cached pages: the target may have changed since. With
 * prefetching on, the pages read since the last call are read again at
 * once, in one system call (a sample mostly reads the pages the last one
 * did). */
void spp_remote_next(spp_remote *r);
void spp_remote_prefetch(spp_remote *r, int on);
/* A reader over r (r must outlive it). */
spp_reader spp_remote_reader(spp_remote *r);
/* Starts logging the pages read (forgetting those logged before). A read
 * that would log more than SPP_SNAP_PAGES fails. Pages that cannot be read
 * are not logged. */
void spp_remote_log_begin(spp_remote *r);
/* The pages logged since spp_remote_log_begin, in the order first read;
 * returns how many (at most SPP_SNAP_PAGES). */
int spp_remote_logged(const spp_remote *r, uint64_t *pages);
int spp_remote_nlogged(const spp_remote *r);
/* Logs those of the pages that the snapshot holds, as if read. */
void spp_remote_log_pages(spp_remote *r, const uint64_t *pages, int n);
/* Reads the n pages (at most SPP_SNAP_PAGES), in the order given, in one
 * system call (a page that cannot be read ends a call: the rest are read by
 * the next, four calls at most, and any left then are left out), and
 * serves reads from them until spp_remote_snapshot_end. */
void spp_remote_snapshot(spp_remote *r, const uint64_t *pages, int n);
/* A page listed twice is copied twice, at the two moments of the system
 * call its places in the list give; reads are served from the later copy.
 * Whether [addr, addr + n) reads the same in both: 0 if it changed between
 * them (or the earlier copy was cut short), 1 if not, SPP_SNAP_ONCE if the
 * snapshot holds a page of it once, -1 if it does not hold it. */
#define SPP_SNAP_ONCE 2
int spp_remote_snapshot_steady(const spp_remote *r, uint64_t addr, size_t n);
/* [addr, addr + n), within one page, as the earlier of its two copies
 * held it, into buf: 0, or -1 if the snapshot has no earlier copy of it. */
int spp_remote_snapshot_earlier(const spp_remote *r, uint64_t addr, void *buf, size_t n);
/* Whether the snapshot holds the page at page. */
int spp_remote_snapshot_holds(const spp_remote *r, uint64_t page);
void spp_remote_snapshot_end(spp_remote *r);
/* One uncached read. Returns 0, or -errno. */
int spp_remote_read_raw(pid_t pid, uint64_t addr, void *buf, size_t n);

#endif
