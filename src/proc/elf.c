/* elf.c - symbol lookup in untrusted ELF64 files. */
#include "elf.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/profile.h"

#define MAX_FILE (1ull << 32)
/* the most copied from one file (symbol tables run to a few MB) */
#define MAX_COPY (256ull << 20)

/* Is [off, off + len) inside the file? */
static int in_file(const spp_elf *e, uint64_t off, uint64_t len)
{
    return off <= e->size && len <= e->size - off;
}

static int read_ehdr(const spp_elf *e, Elf64_Ehdr *h)
{
    if (!in_file(e, 0, sizeof(*h)))
        return SPP_EINVAL;
    memcpy(h, e->data, sizeof(*h));
    if (memcmp(h->e_ident, ELFMAG, SELFMAG) != 0 || h->e_ident[EI_CLASS] != ELFCLASS64 ||
        h->e_ident[EI_DATA] != ELFDATA2LSB)
        return SPP_EINVAL;
    return SPP_OK;
}

static int section(const spp_elf *e, const Elf64_Ehdr *h, unsigned i, Elf64_Shdr *s)
{
    if (i >= h->e_shnum || h->e_shentsize != sizeof(Elf64_Shdr))
        return SPP_EINVAL;
    uint64_t off = h->e_shoff + (uint64_t)i * sizeof(Elf64_Shdr);
    if (off < h->e_shoff || !in_file(e, off, sizeof(*s)))
        return SPP_EINVAL;
    memcpy(s, e->data + off, sizeof(*s));
    return SPP_OK;
}

int spp_elf_parse(spp_elf *e, const void *data, size_t size)
{
    memset(e, 0, sizeof(*e));
    e->data = data;
    e->size = size;
    Elf64_Ehdr h;
    if (read_ehdr(e, &h) < 0)
        return SPP_EINVAL;
    e->type = h.e_type;
    /* The first loadable segment tells where the file's addresses start. */
    e->load_vaddr = UINT64_MAX;
    if (h.e_phentsize == sizeof(Elf64_Phdr)) {
        for (unsigned i = 0; i < h.e_phnum && i < 4096; i++) {
            uint64_t off = h.e_phoff + (uint64_t)i * sizeof(Elf64_Phdr);
            Elf64_Phdr ph;
            if (off < h.e_phoff || !in_file(e, off, sizeof(ph)))
                break;
            memcpy(&ph, e->data + off, sizeof(ph));
            if (ph.p_type == PT_LOAD && ph.p_vaddr < e->load_vaddr)
                e->load_vaddr = ph.p_vaddr & ~(uint64_t)0xfff;
        }
    }
    if (e->load_vaddr == UINT64_MAX)
        e->load_vaddr = 0;
    Elf64_Shdr names;
    if (section(e, &h, h.e_shstrndx, &names) == 0 && in_file(e, names.sh_offset, names.sh_size)) {
        e->shoff = h.e_shoff;
        e->shnum = h.e_shnum;
        e->shstroff = names.sh_offset;
        e->shstrsize = names.sh_size;
        /* (section() checked the table's entry size and each entry's place) */
        if (!in_file(e, e->shoff, e->shnum * sizeof(Elf64_Shdr)))
            e->shnum = 0;
    }
    for (unsigned i = 0; i < h.e_shnum && i < 65536 && e->ntabs < 2; i++) {
        Elf64_Shdr s, str;
        if (section(e, &h, i, &s) < 0)
            break;
        if (s.sh_type != SHT_DYNSYM && s.sh_type != SHT_SYMTAB)
            continue;
        if (s.sh_entsize != sizeof(Elf64_Sym) || !in_file(e, s.sh_offset, s.sh_size) ||
            section(e, &h, s.sh_link, &str) < 0 || !in_file(e, str.sh_offset, str.sh_size))
            continue;
        e->tabs[e->ntabs].off = s.sh_offset;
        e->tabs[e->ntabs].count = s.sh_size / sizeof(Elf64_Sym);
        e->tabs[e->ntabs].stroff = str.sh_offset;
        e->tabs[e->ntabs].strsize = str.sh_size;
        e->ntabs++;
    }
    return SPP_OK;
}

/* Reads [off, off + len) of fd into dst; a short read (the file shrank
 * since it was measured) is an error. */
static int read_at(int fd, unsigned char *dst, uint64_t off, uint64_t len)
{
    while (len) {
        ssize_t n = pread(fd, dst, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return SPP_EINVAL;
        dst += n;
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return SPP_OK;
}

/* Replaces e's view of the file by an owned copy of what the lookups use:
 * the section headers with their names, and the symbol tables with their
 * strings, read with pread. A file mapped for the whole recording would
 * raise SIGBUS in spprof if it were truncated meanwhile (a library rewritten
 * in place); a copy cannot change. */
static int copy_symbols(spp_elf *e, int fd)
{
    uint64_t total = e->shnum * sizeof(Elf64_Shdr) + e->shstrsize;
    for (int t = 0; t < e->ntabs; t++)
        total += e->tabs[t].count * sizeof(Elf64_Sym) + e->tabs[t].strsize;
    if (total > MAX_COPY)
        return SPP_EINVAL;
    unsigned char *buf = malloc(total ? total : 1);
    if (!buf)
        return SPP_ENOMEM;
    uint64_t at = 0;
    int rc = read_at(fd, buf, e->shoff, e->shnum * sizeof(Elf64_Shdr));
    e->shoff = at;
    at += e->shnum * sizeof(Elf64_Shdr);
    if (rc == 0)
        rc = read_at(fd, buf + at, e->shstroff, e->shstrsize);
    e->shstroff = at;
    at += e->shstrsize;
    for (int t = 0; t < e->ntabs && rc == 0; t++) {
        uint64_t len = e->tabs[t].count * sizeof(Elf64_Sym);
        rc = read_at(fd, buf + at, e->tabs[t].off, len);
        e->tabs[t].off = at;
        at += len;
        if (rc == 0)
            rc = read_at(fd, buf + at, e->tabs[t].stroff, e->tabs[t].strsize);
        e->tabs[t].stroff = at;
        at += e->tabs[t].strsize;
    }
    if (rc < 0) {
        free(buf);
        return rc;
    }
    e->data = buf;
    e->size = total;
    e->owned = buf;
    return SPP_OK;
}

int spp_elf_open(spp_elf *e, const char *path)
{
    memset(e, 0, sizeof(*e));
    /* O_NONBLOCK: a FIFO named like a library (a hostile target) must not
     * block the open; it is then refused as not a regular file. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        (uint64_t)st.st_size > MAX_FILE) {
        close(fd);
        return SPP_EINVAL;
    }
    /* Mapped only while its headers are checked and indexed. */
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int rc = m == MAP_FAILED ? -errno : spp_elf_parse(e, m, (size_t)st.st_size);
    if (rc == 0)
        rc = copy_symbols(e, fd);
    if (m != MAP_FAILED)
        munmap(m, (size_t)st.st_size);
    close(fd);
    if (rc < 0) {
        memset(e, 0, sizeof(*e));
        return rc;
    }
    return SPP_OK;
}

int spp_elf_open_target(spp_elf *e, pid_t pid, const char *path)
{
    char rooted[PATH_MAX + 32];
    if (pid <= 0 || path[0] != '/')
        return spp_elf_open(e, path);
    if ((size_t)snprintf(rooted, sizeof(rooted), "/proc/%d/root%s", (int)pid, path) < sizeof(rooted) &&
        spp_elf_open(e, rooted) == 0)
        return SPP_OK;
    /* The same path here is the target's file only if the target sees the
     * same root (or its root cannot be looked at): in a container it names
     * another file, whose symbols would be wrong. */
    struct stat theirs, ours;
    snprintf(rooted, sizeof(rooted), "/proc/%d/root", (int)pid);
    if (stat(rooted, &theirs) == 0 && stat("/", &ours) == 0 &&
        (theirs.st_dev != ours.st_dev || theirs.st_ino != ours.st_ino))
        return SPP_EINVAL;
    return spp_elf_open(e, path);
}

void spp_elf_close(spp_elf *e)
{
    free(e->owned);
    memset(e, 0, sizeof(*e));
}

int spp_elf_symbol(const spp_elf *e, const char *name, uint64_t *value, uint64_t *size)
{
    size_t len = strlen(name);
    for (int t = 0; t < e->ntabs; t++) {
        for (uint64_t i = 1; i < e->tabs[t].count; i++) {
            Elf64_Sym sym;
            memcpy(&sym, e->data + e->tabs[t].off + i * sizeof(sym), sizeof(sym));
            if (sym.st_name >= e->tabs[t].strsize || sym.st_shndx == SHN_UNDEF)
                continue;
            uint64_t room = e->tabs[t].strsize - sym.st_name;
            const char *s = (const char *)e->data + e->tabs[t].stroff + sym.st_name;
            if (room > len && memcmp(s, name, len) == 0 && s[len] == '\0') {
                *value = sym.st_value;
                if (size)
                    *size = sym.st_size;
                return SPP_OK;
            }
        }
    }
    return SPP_EINVAL;
}

int spp_elf_function_at(const spp_elf *e, uint64_t addr, const char **name, uint64_t *offset)
{
    for (int t = 0; t < e->ntabs; t++) {
        for (uint64_t i = 1; i < e->tabs[t].count; i++) {
            Elf64_Sym sym;
            memcpy(&sym, e->data + e->tabs[t].off + i * sizeof(sym), sizeof(sym));
            if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || sym.st_shndx == SHN_UNDEF ||
                addr < sym.st_value || addr - sym.st_value >= (sym.st_size ? sym.st_size : 1) ||
                sym.st_name >= e->tabs[t].strsize)
                continue;
            const char *s = (const char *)e->data + e->tabs[t].stroff + sym.st_name;
            /* The name must end inside the string table. */
            if (!memchr(s, '\0', e->tabs[t].strsize - sym.st_name))
                continue;
            *name = s;
            *offset = addr - sym.st_value;
            return SPP_OK;
        }
    }
    return SPP_EINVAL;
}

int spp_elf_section(const spp_elf *e, const char *name, uint64_t *addr, uint64_t *size)
{
    size_t len = strlen(name);
    for (uint64_t i = 0; i < e->shnum; i++) {
        Elf64_Shdr s;
        memcpy(&s, e->data + e->shoff + i * sizeof(s), sizeof(s));
        if (s.sh_name >= e->shstrsize || e->shstrsize - s.sh_name <= len)
            continue;
        const char *n = (const char *)e->data + e->shstroff + s.sh_name;
        if (memcmp(n, name, len) == 0 && n[len] == '\0') {
            *addr = s.sh_addr;
            *size = s.sh_size;
            return SPP_OK;
        }
    }
    return SPP_EINVAL;
}
