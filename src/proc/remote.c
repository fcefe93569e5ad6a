/* remote.c - process_vm_readv with a per-sample page cache. */
#include "remote.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "../core/profile.h"

int spp_remote_read_raw(pid_t pid, uint64_t addr, void *buf, size_t n)
{
    struct iovec local = {buf, n}, remote = {(void *)(uintptr_t)addr, n};
    ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (got < 0)
        return -errno;
    return (size_t)got == n ? 0 : -EFAULT;
}

_Static_assert((SPP_SNAP_SLOTS & (SPP_SNAP_SLOTS - 1)) == 0 && SPP_SNAP_SLOTS > SPP_SNAP_PAGES &&
                   SPP_SNAP_PAGES <= 32767,
               "snapshot tables: a power of two of int16_t slots, never full");

int spp_remote_init(spp_remote *r, pid_t pid)
{
    memset(r, 0, sizeof(*r));
    r->pid = pid;
    r->gen = 1;
    memset(r->snap.slot, 0xff, sizeof(r->snap.slot));
    memset(r->snap.logslot, 0xff, sizeof(r->snap.logslot));
    r->pages = calloc(SPP_REMOTE_PAGES, sizeof(spp_remote_page));
    return r->pages ? SPP_OK : SPP_ENOMEM;
}

void spp_remote_free(spp_remote *r)
{
    free(r->pages);
    free(r->snap.data);
    r->pages = NULL;
    r->snap.data = NULL;
}

static void read_pages(spp_remote *r, const uint64_t *pages, unsigned char *const *bufs, int n,
                       void (*took)(void *ctx, int i, uint32_t len), void *ctx);

/* Open addressing over page numbers: -1 ends a probe. */
static unsigned slot_of(uint64_t page)
{
    return (unsigned)((page >> 12) * 0x9e3779b97f4a7c15ull >> 40) & (SPP_SNAP_SLOTS - 1);
}

static int table_find(const int16_t *table, const uint64_t *keys, uint64_t page)
{
    for (unsigned i = slot_of(page), k = 0; k < SPP_SNAP_SLOTS; i = (i + 1) & (SPP_SNAP_SLOTS - 1), k++) {
        if (table[i] < 0)
            return -1;
        if (keys[table[i]] == page)
            return table[i];
    }
    return -1;
}

static void table_add(int16_t *table, uint64_t page, int index)
{
    unsigned i = slot_of(page);
    while (table[i] >= 0)
        i = (i + 1) & (SPP_SNAP_SLOTS - 1);
    table[i] = (int16_t)index;
}

/* The entry of index from (for page) now points to index to. */
static void table_move(int16_t *table, uint64_t page, int from, int to)
{
    unsigned i = slot_of(page);
    while (table[i] != from)
        i = (i + 1) & (SPP_SNAP_SLOTS - 1);
    table[i] = (int16_t)to;
}

/* -1 when the log is full. */
static int log_page(spp_snapshot *sn, uint64_t page)
{
    if (table_find(sn->logslot, sn->log, page) >= 0)
        return 0;
    if (sn->nlog == SPP_SNAP_PAGES)
        return -1;
    sn->log[sn->nlog] = page;
    table_add(sn->logslot, page, sn->nlog++);
    return 0;
}

void spp_remote_log_begin(spp_remote *r)
{
    r->snap.logging = 1;
    r->snap.nlog = 0;
    memset(r->snap.logslot, 0xff, sizeof(r->snap.logslot));
}

void spp_remote_log_pages(spp_remote *r, const uint64_t *pages, int n)
{
    for (int i = 0; i < n; i++)
        if (r->snap.on && table_find(r->snap.slot, r->snap.addr, pages[i]) >= 0)
            log_page(&r->snap, pages[i]);
}

int spp_remote_nlogged(const spp_remote *r) { return r->snap.nlog; }

int spp_remote_logged(const spp_remote *r, uint64_t *pages)
{
    memcpy(pages, r->snap.log, (size_t)r->snap.nlog * sizeof(*pages));
    return r->snap.nlog;
}

typedef struct snapped {
    spp_snapshot *sn;
    const uint64_t *pages;
} snapped;

static void took_snapped(void *ctx, int i, uint32_t len)
{
    snapped *sp = ctx;
    spp_snapshot *sn = sp->sn;
    /* (pages are read in order: page i went to buffer i) */
    int earlier = table_find(sn->slot, sn->addr, sp->pages[i]);
    sn->addr[i] = sp->pages[i];
    sn->len[i] = len;
    sn->twin[i] = (int16_t)earlier;
    if (earlier < 0)
        table_add(sn->slot, sp->pages[i], i);
    else
        table_move(sn->slot, sp->pages[i], earlier, i);
}

void spp_remote_snapshot(spp_remote *r, const uint64_t *pages, int n)
{
    spp_snapshot *sn = &r->snap;
    unsigned char *bufs[SPP_SNAP_PAGES];
    if (!sn->data)
        sn->data = malloc(SPP_SNAP_PAGES * sizeof(*sn->data));
    if (n > SPP_SNAP_PAGES || !sn->data)
        n = sn->data ? SPP_SNAP_PAGES : 0; /* (out of memory: no page held) */
    memset(sn->slot, 0xff, sizeof(sn->slot));
    for (int i = 0; i < n; i++)
        bufs[i] = sn->data[i];
    sn->n = n;
    sn->on = 1;
    snapped sp = {sn, pages};
    read_pages(r, pages, bufs, n, took_snapped, &sp);
}

int spp_remote_snapshot_holds(const spp_remote *r, uint64_t page)
{
    return r->snap.on && table_find(r->snap.slot, r->snap.addr, page) >= 0;
}

int spp_remote_snapshot_steady(const spp_remote *r, uint64_t addr, size_t n)
{
    const spp_snapshot *sn = &r->snap;
    int once = 0;
    if (!sn->on)
        return -1;
    while (n > 0) {
        uint64_t page = addr & ~(uint64_t)4095, off = addr - page;
        int b = table_find(sn->slot, sn->addr, page), a = b >= 0 ? sn->twin[b] : -1;
        size_t take = 4096 - off < n ? 4096 - off : n;
        if (b < 0 || off + take > sn->len[b])
            return -1;
        if (a >= 0 && (off + take > sn->len[a] || memcmp(sn->data[a] + off, sn->data[b] + off, take)))
            return 0;
        once |= a < 0;
        addr += take;
        n -= take;
    }
    return once ? SPP_SNAP_ONCE : 1;
}

int spp_remote_snapshot_earlier(const spp_remote *r, uint64_t addr, void *buf, size_t n)
{
    const spp_snapshot *sn = &r->snap;
    uint64_t page = addr & ~(uint64_t)4095, off = addr - page;
    int b = sn->on ? table_find(sn->slot, sn->addr, page) : -1, a = b >= 0 ? sn->twin[b] : -1;
    if (a < 0 || off + n > sn->len[a])
        return -1;
    memcpy(buf, sn->data[a] + off, n);
    return 0;
}

void spp_remote_snapshot_end(spp_remote *r)
{
    r->snap.on = 0;
    r->snap.logging = 0;
}

static spp_remote_page *slot_for(spp_remote *r, uint64_t page)
{
    return &r->pages[(page >> 12) & (SPP_REMOTE_PAGES - 1)];
}

/* Reads n pages into buffers in as few process_vm_readv calls as it can: one,
 * unless a page cannot be read, which ends a call (the rest go to the next;
 * four calls at most). Calls took(ctx, i, len) for each page i read. */
static void read_pages(spp_remote *r, const uint64_t *pages, unsigned char *const *bufs, int n,
                       void (*took)(void *ctx, int i, uint32_t len), void *ctx)
{
    struct iovec local[SPP_SNAP_PAGES], remote[SPP_SNAP_PAGES];
    if (n > SPP_SNAP_PAGES)
        n = SPP_SNAP_PAGES;
    for (int i = 0, calls = 0; i < n && calls < 4; calls++) {
        int k = 0;
        for (int j = i; j < n; j++, k++) {
            local[k].iov_base = bufs[j];
            local[k].iov_len = 4096;
            remote[k].iov_base = (void *)(uintptr_t)pages[j];
            remote[k].iov_len = 4096;
        }
        ssize_t got = process_vm_readv(r->pid, local, (unsigned long)k, remote, (unsigned long)k, 0);
        r->reads++;
        if (got < (ssize_t)k * 4096)
            r->last_errno = got < 0 ? errno : EFAULT;
        size_t whole = got > 0 ? (size_t)got / 4096 : 0, part = got > 0 ? (size_t)got % 4096 : 0;
        for (size_t j = 0; j < whole + (part > 0); j++)
            took(ctx, i + (int)j, j < whole ? 4096 : (uint32_t)part);
        i += (int)whole + 1; /* past the page that could not be read (or was cut short) */
    }
}

typedef struct prefetched {
    spp_remote *r;
    const uint64_t *pages;
} prefetched;

static void took_cached(void *ctx, int i, uint32_t len)
{
    prefetched *pf = ctx;
    spp_remote_page *p = slot_for(pf->r, pf->pages[i]);
    p->addr = pf->pages[i];
    p->gen = pf->r->gen;
    p->len = len;
    p->used = 0;
}

void spp_remote_next(spp_remote *r)
{
    r->gen++;
    if (!r->prefetch || !r->nused)
        return;
    /* One page a cache slot (pages listed were in distinct slots unless one
     * took another's place since: the later one is kept). */
    uint64_t pages[SPP_SNAP_PAGES];
    unsigned char *bufs[SPP_SNAP_PAGES];
    int n = 0;
    for (int i = r->nused - 1; i >= 0; i--) {
        spp_remote_page *p = slot_for(r, r->used[i]);
        if (p->used == r->gen)
            continue;
        p->used = r->gen; /* (taken: cleared when read) */
        pages[n] = r->used[i];
        bufs[n++] = p->data;
    }
    r->nused = 0;
    prefetched pf = {r, pages};
    read_pages(r, pages, bufs, n, took_cached, &pf);
}

void spp_remote_prefetch(spp_remote *r, int on)
{
    r->prefetch = on;
    r->nused = 0;
}

static const spp_remote_page *page_for(spp_remote *r, uint64_t page)
{
    spp_remote_page *p = slot_for(r, page);
    if (p->gen != r->gen || p->addr != page) {
        unsigned char *buf = p->data;
        prefetched pf = {r, &page};
        read_pages(r, &page, &buf, 1, took_cached, &pf);
        if (p->gen != r->gen || p->addr != page)
            return NULL; /* (not read: took_cached marks a page read) */
    }
    if (r->prefetch && p->used != r->gen && r->nused < SPP_SNAP_PAGES) {
        p->used = r->gen;
        r->used[r->nused++] = page;
    }
    return p;
}

static int remote_read(void *ctx, uint64_t addr, void *buf, size_t n)
{
    spp_remote *r = ctx;
    unsigned char *out = buf;
    if (!spp_user_range(addr, 0, n))
        return SPP_EINVAL;
    if (n > 16384) {
        /* Large reads (line tables, long strings) bypass the cache. */
        int rc = spp_remote_read_raw(r->pid, addr, buf, n);
        r->reads++;
        if (rc < 0)
            r->last_errno = -rc;
        return rc < 0 ? SPP_EINVAL : SPP_OK;
    }
    while (n > 0) {
        uint64_t page = addr & ~(uint64_t)4095, off = addr - page;
        const unsigned char *data;
        uint32_t len;
        int in_snap = r->snap.on ? table_find(r->snap.slot, r->snap.addr, page) : -1;
        if (in_snap >= 0) {
            data = r->snap.data[in_snap];
            len = r->snap.len[in_snap];
        } else {
            /* A page that cannot be read is not logged: the reader stops
             * there as it would have in the snapshot. */
            const spp_remote_page *p = page_for(r, page);
            if (!p)
                return SPP_EINVAL;
            data = p->data;
            len = p->len;
        }
        /* A walk needing more pages than a snapshot holds ends there (cut
         * short, as a stack deeper than the walker's cap is). */
        if (r->snap.logging && log_page(&r->snap, page) < 0)
            return SPP_EINVAL;
        if (off >= len)
            return SPP_EINVAL;
        size_t take = len - off < n ? len - off : n;
        memcpy(out, data + off, take);
        out += take;
        addr += take;
        n -= take;
    }
    return SPP_OK;
}

spp_reader spp_remote_reader(spp_remote *r)
{
    spp_reader rd = {remote_read, r};
    return rd;
}
