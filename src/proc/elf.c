/* elf.c - symbol lookup in untrusted ELF64 files. */
#include "elf.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/profile.h"

#define MAX_FILE (1ull << 32)

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
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (m == MAP_FAILED)
        return -err;
    if (spp_elf_parse(e, m, (size_t)st.st_size) < 0) {
        munmap(m, (size_t)st.st_size);
        memset(e, 0, sizeof(*e));
        return SPP_EINVAL;
    }
    e->mapped = 1;
    return SPP_OK;
}

int spp_elf_open_target(spp_elf *e, pid_t pid, const char *path)
{
    char rooted[PATH_MAX + 32];
    if (pid > 0 && path[0] == '/' &&
        (size_t)snprintf(rooted, sizeof(rooted), "/proc/%d/root%s", (int)pid, path) < sizeof(rooted) &&
        spp_elf_open(e, rooted) == 0)
        return SPP_OK;
    return spp_elf_open(e, path);
}

void spp_elf_close(spp_elf *e)
{
    if (e->mapped && e->data)
        munmap((void *)e->data, e->size);
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
    Elf64_Ehdr h;
    Elf64_Shdr names;
    if (read_ehdr(e, &h) < 0 || section(e, &h, h.e_shstrndx, &names) < 0 ||
        !in_file(e, names.sh_offset, names.sh_size))
        return SPP_EINVAL;
    size_t len = strlen(name);
    for (unsigned i = 0; i < h.e_shnum && i < 65536; i++) {
        Elf64_Shdr s;
        if (section(e, &h, i, &s) < 0)
            return SPP_EINVAL;
        if (s.sh_name >= names.sh_size || names.sh_size - s.sh_name <= len)
            continue;
        const char *n = (const char *)e->data + names.sh_offset + s.sh_name;
        if (memcmp(n, name, len) == 0 && n[len] == '\0') {
            *addr = s.sh_addr;
            *size = s.sh_size;
            return SPP_OK;
        }
    }
    return SPP_EINVAL;
}
