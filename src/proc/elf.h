/* elf.h - reads symbols from ELF64 files (the target's python executable or
 * libpython). The file is untrusted: every offset and size is checked, and a
 * malformed file is an error, never a crash. Not async-signal-safe. */
#ifndef SPP_ELF_H
#define SPP_ELF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct spp_elf {
    /* the image lookups read: the whole file (spp_elf_parse, borrowed), or
     * an owned copy of its section headers and symbol tables (spp_elf_open) */
    const unsigned char *data;
    size_t size;
    unsigned char *owned;      /* data, when it is ours to free */
    uint64_t load_vaddr;       /* p_vaddr of the first PT_LOAD, page-aligned down */
    int type;                  /* e_type: ET_EXEC or ET_DYN */
    /* symbol tables found: .dynsym/.dynstr and .symtab/.strtab */
    struct {
        uint64_t off, count, stroff, strsize;
    } tabs[2];
    int ntabs;
    /* the section headers and their names (shnum 0: none usable) */
    uint64_t shoff, shnum, shstroff, shstrsize;
} spp_elf;

/* Validates and indexes an ELF image held in memory (borrowed). Returns 0 or
 * SPP_EINVAL. */
int spp_elf_parse(spp_elf *e, const void *data, size_t size);
/* Parses a file and keeps a copy of its section headers and symbol tables
 * (not a mapping: the file may change or shrink meanwhile). Returns 0, or
 * negative: not a usable ELF file, out of memory, or -errno from open. */
int spp_elf_open(spp_elf *e, const char *path);
void spp_elf_close(spp_elf *e);
/* spp_elf_open of a file named as process pid sees it: through
 * /proc/PID/root first, so that a target in a container is read from its
 * own file system, then by the same path here (pid 0: this process). */
int spp_elf_open_target(spp_elf *e, pid_t pid, const char *path);

/* Looks a symbol up by name in .dynsym then .symtab. Returns 0 or
 * SPP_EINVAL (not found). */
int spp_elf_symbol(const spp_elf *e, const char *name, uint64_t *value, uint64_t *size);

/* The function symbol containing the file address addr (its name is
 * borrowed from e). Returns 0, or SPP_EINVAL if none. */
int spp_elf_function_at(const spp_elf *e, uint64_t addr, const char **name, uint64_t *offset);

/* Finds the section named name; returns 0 and its address and size. */
int spp_elf_section(const spp_elf *e, const char *name, uint64_t *addr, uint64_t *size);

#endif
