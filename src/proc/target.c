/* target.c - locating CPython inside another process. */
#include "target.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../core/profile.h"
#include "../pyabi/walker.h"
#include "elf.h"
#include "remote.h"

#define MAX_THREAD_CHAIN 100000

void spp_version_string(uint32_t v, char *buf, size_t n)
{
    if (v & 0xff00)
        snprintf(buf, n, "%u.%u.%u", v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff);
    else
        snprintf(buf, n, "%u.%u", v >> 24, (v >> 16) & 0xff);
}

/* Where glibc keeps a thread's tid inside its struct pthread, found in our
 * own process (the target is assumed to use the same C library, which holds
 * for a target on the same host). */
static int find_pthread_tid_offset(void)
{
    pid_t me = (pid_t)syscall(SYS_gettid);
    const unsigned char *self = (const unsigned char *)(uintptr_t)pthread_self();
    for (int off = 0; off < 2048; off += 4) {
        pid_t v;
        memcpy(&v, self + off, sizeof(v));
        if (v == me)
            return off;
    }
    return -1;
}

/* Major and minor version from a file name like libpython3.11.so.1.0 or
 * python3.9: 0 if it says nothing. */
static uint32_t version_from_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *p = strstr(base, "python3.");
    if (!p)
        return 0;
    p += 8;
    if (!isdigit((unsigned char)*p))
        return 0;
    unsigned minor = (unsigned)strtoul(p, NULL, 10);
    return minor < 100 ? (3u << 24) | (minor << 16) : 0;
}

static int is_candidate(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strncmp(base, "python", 6) == 0 || strncmp(base, "libpython", 9) == 0;
}

typedef struct found_module {
    char path[PATH_MAX];
    uint64_t lowest;      /* lowest mapping address of this file */
} found_module;

/* Reads /proc/PID/maps and collects the files that may hold the runtime. */
static int candidate_modules(pid_t pid, found_module *mods, int cap, int *n)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    char line[PATH_MAX + 256];
    *n = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long start, end, off;
        char perms[8];
        int pos = 0;
        if (sscanf(line, "%llx-%llx %7s %llx %*s %*s %n", &start, &end, perms, &off, &pos) < 4 || !pos)
            continue;
        char *file = line + pos;
        file[strcspn(file, "\n")] = '\0';
        if (file[0] != '/' || !is_candidate(file))
            continue;
        int i;
        for (i = 0; i < *n; i++)
            if (strcmp(mods[i].path, file) == 0)
                break;
        if (i == *n) {
            if (*n == cap)
                continue;
            size_t len = strlen(file);
            if (len >= sizeof(mods[i].path))
                continue;
            memcpy(mods[i].path, file, len + 1);
            mods[i].lowest = start;
            (*n)++;
        } else if (start < mods[i].lowest) {
            mods[i].lowest = start;
        }
    }
    fclose(f);
    return 0;
}

static int fail(char *err, size_t errlen, int code, const char *fmt, const char *a, long b)
{
    int n = snprintf(err, errlen, fmt, a, b);
    if (code == SPP_TARGET_PERMISSION && n > 0 && (size_t)n < errlen) {
        /* Say why and what would fix it. */
        int scope = -1;
        FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
        if (f) {
            if (fscanf(f, "%d", &scope) != 1)
                scope = -1;
            fclose(f);
        }
        const char *fix = scope >= 3 ? "ptrace is disabled on this machine (kernel.yama.ptrace_scope=3)"
                          : scope >= 1
                              ? "reading another process needs root or CAP_SYS_PTRACE "
                                "(kernel.yama.ptrace_scope=%d allows it only for the target's parent)"
                              : "reading another process needs root, CAP_SYS_PTRACE, or running as "
                                "the target's user";
        snprintf(err + n, errlen - (size_t)n, ": ");
        n += 2;
        if ((size_t)n < errlen)
            snprintf(err + n, errlen - (size_t)n, fix, scope);
    }
    return code;
}

/* The built-in types and singletons whose values dump --locals shows;
 * those not found stay 0 (their values are then shown by type name). */
static void find_types(spp_elf *elf, uint64_t bias, spp_pytypes *ty)
{
    static const struct {
        const char *symbol;
        size_t field;
    } syms[] = {
        {"PyLong_Type", offsetof(spp_pytypes, int_type)},
        {"PyBool_Type", offsetof(spp_pytypes, bool_type)},
        {"PyFloat_Type", offsetof(spp_pytypes, float_type)},
        {"PyUnicode_Type", offsetof(spp_pytypes, str_type)},
        {"PyBytes_Type", offsetof(spp_pytypes, bytes_type)},
        {"PyCell_Type", offsetof(spp_pytypes, cell_type)},
        {"_Py_NoneStruct", offsetof(spp_pytypes, none)},
        {"_Py_TrueStruct", offsetof(spp_pytypes, true_obj)},
        {"_Py_FalseStruct", offsetof(spp_pytypes, false_obj)},
    };
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
        uint64_t addr;
        if (spp_elf_symbol(elf, syms[i].symbol, &addr, NULL) == 0) {
            addr += bias;
            memcpy((char *)ty + syms[i].field, &addr, sizeof(addr));
        }
    }
}

int spp_target_open(spp_target *t, pid_t pid, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    t->pid = pid;
    t->pthread_tid_off = find_pthread_tid_offset();
    if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
        return fail(err, errlen, SPP_TARGET_NO_PROCESS, "no process with PID %s%ld", "", (long)pid);

    found_module mods[8];
    int nmods = 0, rc = candidate_modules(pid, mods, 8, &nmods);
    if (rc == -ENOENT || rc == -ESRCH)
        return fail(err, errlen, SPP_TARGET_NO_PROCESS, "no process with PID %s%ld", "", (long)pid);
    if (rc < 0)
        return fail(err, errlen, SPP_TARGET_PERMISSION,
                    "permission denied reading the memory map of PID %s%ld", "", (long)pid);

    for (int i = 0; i < nmods; i++) {
        /* Through /proc/PID/root, so that a target in a container is read
         * from its own file system. */
        char path[PATH_MAX + 32];
        int plen = snprintf(path, sizeof(path), "/proc/%d/root", (int)pid);
        memcpy(path + plen, mods[i].path, strlen(mods[i].path) + 1);
        spp_elf elf;
        if (spp_elf_open(&elf, path) < 0 && spp_elf_open(&elf, mods[i].path) < 0)
            continue;
        uint64_t runtime, code_type = 0, pyver = 0;
        if (spp_elf_symbol(&elf, "_PyRuntime", &runtime, NULL) < 0) {
            spp_elf_close(&elf);
            continue;
        }
        uint64_t bias = elf.type == 3 /* ET_DYN */ ? mods[i].lowest - elf.load_vaddr : 0;
        t->runtime = runtime + bias;
        if (spp_elf_symbol(&elf, "PyCode_Type", &code_type, NULL) == 0)
            t->code_type = code_type + bias;
        find_types(&elf, bias, &t->types);
        int has_version = spp_elf_symbol(&elf, "Py_Version", &pyver, NULL) == 0;
        spp_elf_close(&elf);
        memcpy(t->module, mods[i].path, sizeof(t->module));

        uint32_t version = version_from_name(mods[i].path);
        if (has_version) {
            uint32_t v;
            if (spp_remote_read_raw(pid, pyver + bias, &v, sizeof(v)) == 0 && (v >> 24) == 3)
                version = v;
        }
        int rd = spp_remote_read_raw(pid, t->runtime, &pyver, 1);
        if (rd == -EPERM || rd == -EACCES)
            return fail(err, errlen, SPP_TARGET_PERMISSION,
                        "permission denied reading the memory of PID %s%ld", "", (long)pid);
        unsigned char debug[SPP_DEBUG_OFFSETS_MAX];
        if (version == 0 || ((version >> 16) & 0xff) >= 13) {
            if (spp_remote_read_raw(pid, t->runtime, debug, sizeof(debug)) < 0)
                return fail(err, errlen, SPP_TARGET_PERMISSION,
                            "cannot read the Python runtime of PID %s%ld", "", (long)pid);
            if (memcmp(debug, "xdebugpy", 8) == 0) {
                uint64_t dv;
                memcpy(&dv, debug + 8, sizeof(dv));
                version = (uint32_t)dv;
                int guessed = 0;
                int prc = spp_pyoffsets_from_debug(&t->off, debug, sizeof(debug), &guessed);
                t->layout_guessed = guessed;
                if (prc < 0) {
                    char vs[32];
                    spp_version_string(version, vs, sizeof(vs));
                    return fail(err, errlen, SPP_TARGET_UNSUPPORTED,
                                prc == SPP_ENOSYS
                                    ? "Python %s (PID %ld) has a debug-offsets layout this spprof does not know"
                                    : "Python %s (PID %ld): its debug offsets failed validation",
                                vs, (long)pid);
                }
                t->from_debug_offsets = 1;
                t->version = version;
                if (!t->code_type)
                    return fail(err, errlen, SPP_TARGET_UNSUPPORTED,
                                "PyCode_Type not found in %s (PID %ld)", mods[i].path, (long)pid);
                return SPP_TARGET_OK;
            }
        }
        t->version = version;
        const spp_pyoffsets *row = spp_pyoffsets_for_version(version);
        if (!row) {
            char vs[32];
            spp_version_string(version, vs, sizeof(vs));
            return fail(err, errlen, SPP_TARGET_UNSUPPORTED,
                        version ? "Python %s (PID %ld) is not supported: spprof reads 3.9 and newer"
                                : "cannot tell the Python version of %s (PID %ld)",
                        version ? vs : mods[i].path, (long)pid);
        }
        t->off = *row;
        if (!t->code_type)
            return fail(err, errlen, SPP_TARGET_UNSUPPORTED, "PyCode_Type not found in %s (PID %ld)",
                        mods[i].path, (long)pid);
        return SPP_TARGET_OK;
    }
    char comm[64] = "?";
    char cpath[64];
    snprintf(cpath, sizeof(cpath), "/proc/%d/comm", (int)pid);
    FILE *f = fopen(cpath, "re");
    if (f) {
        if (fgets(comm, sizeof(comm), f))
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
    }
    return fail(err, errlen, SPP_TARGET_NOT_PYTHON,
                "PID %2$ld (%1$s) is not a Python program: no python executable or libpython "
                "with a _PyRuntime symbol is mapped in it",
                comm, (long)pid);
}

static int read_u64(const spp_reader *r, uint64_t addr, uint64_t *v)
{
    return spp_read(r, addr, v, sizeof(*v));
}

int spp_target_threads(const spp_target *t, const spp_reader *r, spp_pythread *out, int cap)
{
    const spp_pyoffsets *o = &t->off;
    uint64_t interp, ts;
    if (read_u64(r, t->runtime + (uint64_t)o->runtime_interpreters_head, &interp) < 0 || !interp)
        return SPP_EINVAL;
    if (read_u64(r, interp + (uint64_t)o->interp_threads_head, &ts) < 0)
        return SPP_EINVAL;
    uint64_t gil_holder = 0;
    int32_t locked = 0;
    uint64_t gil_base = o->gil_in_interp ? interp : t->runtime;
    if (spp_read(r, gil_base + (uint64_t)o->gil_locked, &locked, sizeof(locked)) == 0 && locked)
        read_u64(r, gil_base + (uint64_t)o->gil_holder, &gil_holder);
    int n = 0;
    for (int steps = 0; ts && n < cap && steps < MAX_THREAD_CHAIN; steps++) {
        spp_pythread *th = &out[n];
        memset(th, 0, sizeof(*th));
        th->tstate = ts;
        if (spp_thread_frame(o, r, ts, &th->frame, &th->below) < 0)
            th->frame = 0;
        read_u64(r, ts + (uint64_t)o->tstate_thread_id, &th->thread_id);
        if (o->tstate_native_thread_id >= 0) {
            uint64_t tid = 0;
            read_u64(r, ts + (uint64_t)o->tstate_native_thread_id, &tid);
            th->tid = (pid_t)tid;
        } else if (t->pthread_tid_off >= 0 && th->thread_id) {
            int32_t tid = 0;
            if (spp_read(r, th->thread_id + (uint64_t)t->pthread_tid_off, &tid, sizeof(tid)) == 0)
                th->tid = tid;
        }
        th->holds_gil = gil_holder && gil_holder == ts;
        n++;
        uint64_t next;
        if (read_u64(r, ts + (uint64_t)o->tstate_next, &next) < 0 || next == ts)
            break;
        ts = next;
    }
    return n;
}
