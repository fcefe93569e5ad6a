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
#include "maps.h"
#include "remote.h"

#define MAX_THREAD_CHAIN 100000

void spp_version_string(uint32_t v, char *buf, size_t n)
{
    if (v & 0xff00)
        snprintf(buf, n, "%u.%u.%u", v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff);
    else
        snprintf(buf, n, "%u.%u", v >> 24, (v >> 16) & 0xff);
}

/* The offsets, up to max, in the calling thread's struct pthread that hold
 * its tid. */
static int tid_offsets(int *offs, int max)
{
    pid_t me = (pid_t)syscall(SYS_gettid);
    const unsigned char *self = (const unsigned char *)(uintptr_t)pthread_self();
    int n = 0;
    for (int off = 0; off < 2048 && n < max; off += 4) {
        pid_t v;
        memcpy(&v, self + off, sizeof(v));
        if (v == me)
            offs[n++] = off;
    }
    return n;
}

typedef struct tid_probe {
    int offs[32];
    int n;
    int found;
} tid_probe;

/* In a second thread: the first of the calling thread's candidates that
 * holds this thread's tid too. */
static void *probe_tid(void *arg)
{
    tid_probe *p = arg;
    int mine[32];
    int n = tid_offsets(mine, 32);
    for (int i = 0; i < p->n && p->found < 0; i++)
        for (int k = 0; k < n; k++)
            if (mine[k] == p->offs[i]) {
                p->found = mine[k];
                break;
            }
    return NULL;
}

/* Where glibc keeps a thread's tid inside its struct pthread, found in our
 * own process (the target is assumed to use the same C library, which holds
 * for a target on the same host). The struct begins with pointers to itself
 * (the TCB's tcb and self, ...), and the upper half of such a pointer,
 * 0x7f00-0x7fff on x86-64, is a PID that spprof can have: the first offset
 * that holds our tid is then one of them, and every thread of a target reads
 * as the same tid (the upper half of its own pointers). Only an offset that
 * holds the tid of a second thread too is taken. */
static int probe_pthread_tid_offset(void)
{
    tid_probe p;
    p.n = tid_offsets(p.offs, 32);
    p.found = -1;
    if (p.n == 0)
        return -1;
    /* (The probe takes no signal: a Ctrl-C meanwhile is the main thread's.) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t th;
    int e = pthread_create(&th, NULL, probe_tid, &p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
        /* No second thread: the upper half of an aligned pointer is never
         * at a multiple of 8, and glibc's tid is. */
        for (int i = 0; i < p.n; i++)
            if (p.offs[i] % 8 == 0)
                return p.offs[i];
        return p.offs[0];
    }
    pthread_join(th, NULL);
    return p.found;
}

/* Probed once (the command is single-threaded where it opens sessions):
 * a session is opened every 5 ms while a launched program starts. */
static int find_pthread_tid_offset(void)
{
    static int found = -2;
    if (found == -2)
        found = probe_pthread_tid_offset();
    return found;
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

/* With the runtime's address known: the version and the layout (the
 * target's own debug offsets for 3.13+, else the compiled table). */
static int use_runtime(spp_target *t, uint64_t runtime, uint32_t version, const char *module,
                       int writable, char *err, size_t errlen)
{
    pid_t pid = t->pid;
    t->runtime = runtime;
    snprintf(t->module, sizeof(t->module), "%s", module);
    unsigned char probe;
    int rd = spp_remote_read_raw(pid, runtime, &probe, 1);
    if (rd == -EPERM || rd == -EACCES)
        return fail(err, errlen, SPP_TARGET_PERMISSION,
                    "permission denied reading the memory of PID %s%ld", "", (long)pid);
    unsigned char debug[SPP_DEBUG_OFFSETS_MAX];
    if (version == 0 || ((version >> 16) & 0xff) >= 13) {
        rd = spp_remote_read_raw(pid, runtime, debug, sizeof(debug));
        if (rd == -ESRCH)
            return fail(err, errlen, SPP_TARGET_NO_PROCESS, "PID %s%ld exited", "", (long)pid);
        if (rd == -EPERM || rd == -EACCES)
            return fail(err, errlen, SPP_TARGET_PERMISSION,
                        "cannot read the Python runtime of PID %s%ld", "", (long)pid);
        if (rd == -EFAULT) {
            /* Not mapped where the file says: the memory map changed since
             * it was read (a library being loaded, or the process exiting). */
            return fail(err, errlen, SPP_TARGET_NOT_READY,
                        "PID %2$ld is still loading %1$s (its Python runtime cannot be read yet)",
                        module, (long)pid);
        }
        if (rd < 0)
            return fail(err, errlen, SPP_TARGET_UNSUPPORTED, "cannot read the memory of PID %2$ld: %1$s",
                        strerror(-rd), (long)pid);
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
            return SPP_TARGET_OK;
        }
        if (((version >> 16) & 0xff) >= 13) {
            /* Every 3.13+ runtime starts with the cookie, in the file's own
             * data. Without it in a read-only mapping, the loader has
             * reserved the file's address range but not yet mapped its data
             * segment there (ld.so maps a library in several steps); in a
             * writable one, this is not a runtime spprof can read. */
            if (!writable)
                return fail(err, errlen, SPP_TARGET_NOT_READY,
                            "PID %2$ld is still loading %1$s (its Python runtime is not mapped yet)",
                            module, (long)pid);
            return fail(err, errlen, SPP_TARGET_UNSUPPORTED,
                        "%s (PID %ld) has no _Py_DebugOffsets at its _PyRuntime: not a CPython "
                        "3.13+ runtime spprof can read",
                        module, (long)pid);
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
                    version ? vs : module, (long)pid);
    }
    t->off = *row;
    return SPP_TARGET_OK;
}

/* What a real _PyRuntimeState at addr looks like to a reader: its first
 * interpreter holds a thread state that points back at it, and that thread
 * state names one of the process's threads. */
static int runtime_plausible(pid_t pid, const spp_pyoffsets *o, uint64_t addr, int pthread_tid_off)
{
    uint64_t interp = 0, ts = 0, back = 0, tid = 0, ident = 0;
    if (spp_remote_read_raw(pid, addr + (uint64_t)o->runtime_interpreters_head, &interp, 8) < 0 ||
        !interp || (interp & 7) ||
        spp_remote_read_raw(pid, interp + (uint64_t)o->interp_threads_head, &ts, 8) < 0 || !ts ||
        (ts & 7) || spp_remote_read_raw(pid, ts + (uint64_t)o->tstate_interp, &back, 8) < 0 ||
        back != interp)
        return 0;
    if (o->tstate_native_thread_id >= 0) {
        if (spp_remote_read_raw(pid, ts + (uint64_t)o->tstate_native_thread_id, &tid, 8) < 0)
            return 0;
    } else {
        int32_t t32 = 0;
        if (pthread_tid_off < 0 ||
            spp_remote_read_raw(pid, ts + (uint64_t)o->tstate_thread_id, &ident, 8) < 0 || !ident ||
            spp_remote_read_raw(pid, ident + (uint64_t)pthread_tid_off, &t32, 4) < 0)
            return 0;
        tid = (uint64_t)(uint32_t)t32;
    }
    char task[64];
    snprintf(task, sizeof(task), "/proc/%d/task/%d", (int)pid, (int)tid);
    return tid > 0 && tid < (1u << 30) && access(task, F_OK) == 0;
}

#define SCAN_MAX (64u << 20)  /* bytes of writable data scanned at most */
#define SCAN_CHUNK (1u << 16)

/* Last resort, for a file that does not name _PyRuntime (stripped of its
 * symbols, or not readable from here): scans the module's writable mappings
 * (its .data, and the .bss after it) for a runtime that validates: the
 * debug-offsets cookie for 3.13+, else the version's layout. Returns the
 * address or 0. */
static uint64_t scan_runtime(pid_t pid, const spp_maps *maps, uint32_t file, uint32_t *version,
                             int pthread_tid_off)
{
    /* A version the file name gives, else every version of the table. */
    const spp_pyoffsets *only = *version ? spp_pyoffsets_for_version(*version) : NULL;
    unsigned nrows = *version ? (only != NULL) : spp_pyoffsets_table_len;
    uint64_t found = 0, scanned = 0;
    unsigned char *buf = malloc(SCAN_CHUNK + SPP_DEBUG_OFFSETS_MAX);
    for (uint32_t m = 0; buf && !found && scanned < SCAN_MAX && m < maps->nmaps; m++) {
        const spp_mapping *map = &maps->maps[m];
        /* the module's own writable mappings, and the .bss right after */
        int bss = map->file == SPP_MAPS_ANON && m > 0 && maps->maps[m - 1].file == file &&
                  maps->maps[m - 1].end == map->start;
        if (!map->write || (map->file != file && !bss))
            continue;
        for (uint64_t at = map->start; at < map->end && !found && scanned < SCAN_MAX; at += SCAN_CHUNK) {
            size_t want = (size_t)(map->end - at < SCAN_CHUNK ? map->end - at : SCAN_CHUNK);
            if (spp_remote_read_raw(pid, at, buf, want) < 0)
                break;
            scanned += want;
            for (size_t i = 0; i + 16 <= want && !found; i += 8) {
                if (memcmp(buf + i, "xdebugpy", 8) == 0) {
                    spp_pyoffsets o;
                    int guessed;
                    if (spp_remote_read_raw(pid, at + i, buf + SCAN_CHUNK, SPP_DEBUG_OFFSETS_MAX) == 0 &&
                        spp_pyoffsets_from_debug(&o, buf + SCAN_CHUNK, SPP_DEBUG_OFFSETS_MAX,
                                                 &guessed) == 0 &&
                        runtime_plausible(pid, &o, at + i, pthread_tid_off))
                        found = at + i;
                    continue;
                }
                for (unsigned k = 0; k < nrows && !found; k++) {
                    const spp_pyoffsets *row = only ? only : &spp_pyoffsets_table[k];
                    /* interpreters.head and interpreters.main are neighbours
                     * and equal while there is one interpreter: a cheap
                     * filter before reading the target. */
                    size_t h = i + (size_t)row->runtime_interpreters_head;
                    if (h + 16 > want)
                        continue;
                    uint64_t head, main_interp;
                    memcpy(&head, buf + h, 8);
                    memcpy(&main_interp, buf + h + 8, 8);
                    if (head && head == main_interp && runtime_plausible(pid, row, at + i, pthread_tid_off)) {
                        found = at + i;
                        if (!*version)
                            *version = row->version;
                    }
                }
            }
        }
    }
    free(buf);
    return found;
}

/* PyCode_Type when the file does not name it: the type of the code object
 * that some thread's current frame runs, if that type calls itself "code". */
static uint64_t find_code_type(const spp_target *t)
{
    spp_remote rem;
    if (spp_remote_init(&rem, t->pid) < 0)
        return 0;
    spp_reader r = spp_remote_reader(&rem);
    spp_pythread threads[64];
    int n = spp_target_threads(t, &r, threads, 64);
    uint64_t found = 0;
    for (int i = 0; i < n && !found; i++) {
        uint64_t code, type, name;
        char buf[8];
        if (!threads[i].frame || spp_read(&r, threads[i].frame + (uint64_t)t->off.frame_code, &code, 8) < 0)
            continue;
        if (t->off.code_tagged)
            code &= ~(uint64_t)7;
        /* tp_name follows the variable-size object header */
        if (code && spp_read(&r, code + (uint64_t)t->off.object_type, &type, 8) == 0 && type &&
            spp_read(&r, type + (uint64_t)t->off.object_type + 16, &name, 8) == 0 && name &&
            spp_read(&r, name, buf, 5) == 0 && memcmp(buf, "code", 5) == 0)
            found = type;
    }
    spp_remote_free(&rem);
    return found;
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

    spp_maps maps;
    int rc = spp_maps_read(&maps, pid);
    if (rc == -ENOENT || rc == -ESRCH)
        return fail(err, errlen, SPP_TARGET_NO_PROCESS, "no process with PID %s%ld", "", (long)pid);
    if (rc < 0)
        return fail(err, errlen, SPP_TARGET_PERMISSION,
                    "permission denied reading the memory map of PID %s%ld", "", (long)pid);
    rc = SPP_TARGET_NOT_PYTHON;
    /* By symbol (or, 3.13+, the PyRuntime section) first, then by scanning.
     * A file still being loaded does not end the search: another may hold
     * a runtime that is up. */
    char pending[512] = "";
    for (int pass = 0; pass < 2 && rc == SPP_TARGET_NOT_PYTHON; pass++) {
        for (uint32_t i = 0; i < maps.nfiles && rc == SPP_TARGET_NOT_PYTHON; i++) {
            const spp_mapped_file *file = &maps.files[i];
            if (!is_candidate(file->path))
                continue;
            spp_elf elf;
            int have_elf = spp_elf_open_target(&elf, pid, file->path) == 0;
            uint64_t runtime = 0, code_type = 0, pyver = 0, size;
            uint64_t eval_start = 0, eval_end = 0;
            spp_pytypes types;
            memset(&types, 0, sizeof(types));
            uint32_t version = version_from_name(file->path);
            if (have_elf) {
                uint64_t bias = elf.type == 3 /* ET_DYN */ ? file->base - elf.load_vaddr : 0;
                if (spp_elf_symbol(&elf, "_PyRuntime", &runtime, NULL) == 0 ||
                    spp_elf_section(&elf, ".PyRuntime", &runtime, &size) == 0)
                    runtime += bias;
                if (spp_elf_symbol(&elf, "PyCode_Type", &code_type, NULL) == 0)
                    code_type += bias;
                if (runtime)
                    find_types(&elf, bias, &types);
                uint32_t v;
                if (spp_elf_symbol(&elf, "Py_Version", &pyver, NULL) == 0 &&
                    spp_remote_read_raw(pid, pyver + bias, &v, sizeof(v)) == 0 && (v >> 24) == 3)
                    version = v;
                /* The evaluation loop's code, where native stacks run Python
                 * (--native). */
                uint64_t eval, eval_size;
                if (runtime &&
                    spp_elf_symbol(&elf, "_PyEval_EvalFrameDefault", &eval, &eval_size) == 0 &&
                    eval_size) {
                    eval_start = eval + bias;
                    eval_end = eval_start + eval_size;
                }
                spp_elf_close(&elf);
            }
            if (pass == 0 && !runtime)
                continue;
            if (pass == 1) {
                if (runtime)
                    continue; /* tried in the first pass */
                unsigned char probe;
                int rd = spp_remote_read_raw(pid, file->base, &probe, 1);
                if (rd == -EPERM || rd == -EACCES) {
                    rc = fail(err, errlen, SPP_TARGET_PERMISSION,
                              "permission denied reading the memory of PID %s%ld", "", (long)pid);
                    break;
                }
                runtime = scan_runtime(pid, &maps, i, &version, t->pthread_tid_off);
                if (!runtime)
                    continue;
                t->runtime_scanned = 1;
            }
            /* (what this file's symbols gave, only now that it is tried) */
            t->types = types;
            t->eval_start = eval_start;
            t->eval_end = eval_end;
            t->module_base = file->base;
            const spp_mapping *rmap = spp_maps_find(&maps, runtime);
            rc = use_runtime(t, runtime, version, file->path, rmap && rmap->write, err, errlen);
            if (rc == SPP_TARGET_OK)
                t->code_type = code_type ? code_type : find_code_type(t);
            if (rc == SPP_TARGET_NOT_READY) {
                snprintf(pending, sizeof(pending), "%s", err);
                rc = SPP_TARGET_NOT_PYTHON;
            }
        }
    }
    spp_maps_free(&maps);
    if (rc == SPP_TARGET_NOT_PYTHON && pending[0]) {
        snprintf(err, errlen, "%s", pending);
        return SPP_TARGET_NOT_READY;
    }
    if (rc != SPP_TARGET_NOT_PYTHON)
        return rc;
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
                "with a Python runtime is mapped in it",
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
