/* loading_target.c - a program caught the way spprof can catch one whose
 * dynamic loader is mapping a library: ld.so first reserves the library's
 * whole address range with one mapping of the file from offset 0, then maps
 * each segment over it at its own file offset. In the first state a
 * library's data segment shows the wrong bytes (its file offset is not its
 * address); in the second its runtime is there but not started.
 *
 * Usage: loading_target ELF SECONDS. Maps ELF the first way, prints
 * "reserved", waits SECONDS (or until SIGUSR1), maps its segments the second
 * way, prints "mapped", waits SECONDS again and exits 0 (exit 2 on a usage
 * or file error). Not a Python program: it never starts an interpreter. */
#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_PHDRS 64

static volatile sig_atomic_t cut_short;

static void on_usr1(int sig)
{
    (void)sig;
    cut_short = 1;
}

/* Waits SECONDS, or until SIGUSR1. */
static void pause_for(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (!cut_short && nanosleep(&ts, &ts) != 0) {
    }
    cut_short = 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: loading_target ELF SECONDS\n");
        return 2;
    }
    double seconds = atof(argv[2]);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    const uint64_t PAGE = (uint64_t)sysconf(_SC_PAGESIZE);
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    Elf64_Ehdr eh;
    if (fd < 0 || pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) ||
        memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_phnum == 0 || eh.e_phnum > MAX_PHDRS || eh.e_phentsize != sizeof(Elf64_Phdr)) {
        fprintf(stderr, "loading_target: %s is not a 64-bit ELF file\n", argv[1]);
        return 2;
    }
    Elf64_Phdr ph[MAX_PHDRS];
    size_t phsize = (size_t)eh.e_phnum * sizeof(Elf64_Phdr);
    if (pread(fd, ph, phsize, (off_t)eh.e_phoff) != (ssize_t)phsize) {
        fprintf(stderr, "loading_target: cannot read the program headers of %s\n", argv[1]);
        return 2;
    }
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < eh.e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD)
            continue;
        if (ph[i].p_vaddr < lo)
            lo = ph[i].p_vaddr;
        if (ph[i].p_vaddr + ph[i].p_memsz > hi)
            hi = ph[i].p_vaddr + ph[i].p_memsz;
    }
    if (lo == UINT64_MAX) {
        fprintf(stderr, "loading_target: %s has no loadable segment\n", argv[1]);
        return 2;
    }
    lo &= ~(PAGE - 1);
    size_t span = (size_t)(((hi + PAGE - 1) & ~(PAGE - 1)) - lo);
    /* Step one: the whole range, from the file's first byte, read-only
     * (ld.so uses the first segment's protection: read-only here too). */
    char *base = mmap(NULL, span, PROT_READ, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) {
        fprintf(stderr, "loading_target: cannot map %s\n", argv[1]);
        return 2;
    }
    printf("reserved\n");
    fflush(stdout);
    pause_for(seconds);
    /* Step two: each segment at its own offset, its bss zeroed. */
    for (int i = 0; i < eh.e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD)
            continue;
        uint64_t start = ph[i].p_vaddr & ~(PAGE - 1);
        uint64_t delta = ph[i].p_vaddr - start;
        uint64_t file_end = ph[i].p_vaddr + ph[i].p_filesz;
        uint64_t mem_end = (ph[i].p_vaddr + ph[i].p_memsz + PAGE - 1) & ~(PAGE - 1);
        int prot = ((ph[i].p_flags & PF_R) ? PROT_READ : 0) | ((ph[i].p_flags & PF_W) ? PROT_WRITE : 0) |
                   ((ph[i].p_flags & PF_X) ? PROT_EXEC : 0);
        if (ph[i].p_filesz > 0 &&
            mmap(base + (start - lo), (size_t)(delta + ph[i].p_filesz), prot,
                 MAP_PRIVATE | MAP_FIXED, fd, (off_t)(ph[i].p_offset - delta)) == MAP_FAILED) {
            fprintf(stderr, "loading_target: cannot map a segment of %s\n", argv[1]);
            return 2;
        }
        uint64_t file_page_end = (file_end + PAGE - 1) & ~(PAGE - 1);
        if (ph[i].p_memsz > ph[i].p_filesz && (prot & PROT_WRITE)) {
            if (ph[i].p_filesz > 0)
                memset(base + (file_end - lo), 0, (size_t)(file_page_end - file_end));
            if (mem_end > file_page_end &&
                mmap(base + (file_page_end - lo), (size_t)(mem_end - file_page_end),
                     prot, MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS, -1,
                     0) == MAP_FAILED) {
                fprintf(stderr, "loading_target: cannot map the bss of %s\n", argv[1]);
                return 2;
            }
        }
    }
    printf("mapped\n");
    fflush(stdout);
    pause_for(seconds);
    close(fd);
    return 0;
}
