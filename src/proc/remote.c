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

int spp_remote_init(spp_remote *r, pid_t pid)
{
    memset(r, 0, sizeof(*r));
    r->pid = pid;
    r->gen = 1;
    r->pages = calloc(SPP_REMOTE_PAGES, sizeof(spp_remote_page));
    return r->pages ? SPP_OK : SPP_ENOMEM;
}

void spp_remote_free(spp_remote *r)
{
    free(r->pages);
    r->pages = NULL;
}

void spp_remote_next(spp_remote *r) { r->gen++; }

static const spp_remote_page *page_for(spp_remote *r, uint64_t page)
{
    spp_remote_page *p = &r->pages[(page >> 12) & (SPP_REMOTE_PAGES - 1)];
    if (p->gen == r->gen && p->addr == page)
        return p;
    struct iovec local = {p->data, sizeof(p->data)}, remote = {(void *)(uintptr_t)page, 4096};
    ssize_t got = process_vm_readv(r->pid, &local, 1, &remote, 1, 0);
    r->reads++;
    if (got <= 0) {
        r->last_errno = got < 0 ? errno : EFAULT;
        p->gen = 0;
        return NULL;
    }
    p->addr = page;
    p->gen = r->gen;
    p->len = (uint32_t)got;
    return p;
}

static int remote_read(void *ctx, uint64_t addr, void *buf, size_t n)
{
    spp_remote *r = ctx;
    unsigned char *out = buf;
    if (addr < 4096 || addr >= 0x800000000000ull || n > 0x800000000000ull - addr)
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
        const spp_remote_page *p = page_for(r, page);
        if (!p || off >= p->len)
            return SPP_EINVAL;
        size_t take = p->len - off < n ? p->len - off : n;
        memcpy(out, p->data + off, take);
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
