/* target.h - finds the CPython runtime inside another process and lists
 * its threads: which file holds _PyRuntime, where it is loaded, which
 * version it is, and the layout (compiled table or the target's own
 * _Py_DebugOffsets). Not thread-safe; not async-signal-safe. */
#ifndef SPP_TARGET_H
#define SPP_TARGET_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../pyabi/offsets.h"
#include "../pyabi/reader.h"
#include "../pyabi/values.h"

/* Why a target could not be opened (for the CLI's messages). */
enum spp_target_error {
    SPP_TARGET_OK = 0,
    SPP_TARGET_NO_PROCESS,     /* no such PID */
    SPP_TARGET_PERMISSION,     /* cannot read its maps or memory */
    SPP_TARGET_NOT_PYTHON,     /* no _PyRuntime anywhere in it */
    SPP_TARGET_NOT_READY,      /* Python found but not initialised yet */
    SPP_TARGET_UNSUPPORTED,    /* a version whose layout spprof cannot get */
};

typedef struct spp_target {
    pid_t pid;
    spp_pyoffsets off;
    uint64_t runtime;        /* address of _PyRuntime in the target */
    uint64_t code_type;      /* address of PyCode_Type in the target */
    spp_pytypes types;       /* built-in types and singletons, for reading values */
    uint32_t version;        /* PY_VERSION_HEX-like, micro may be 0 if unknown */
    int from_debug_offsets;  /* layout read from the target (3.13+) */
    int layout_guessed;      /* a version newer than any known: read as the newest */
    int runtime_scanned;     /* no symbol named the runtime: found by scanning memory */
    int pthread_tid_off;     /* offset of the tid in glibc's struct pthread, -1 unknown */
    uint64_t module_base;    /* where that file is mapped (its lowest address) */
    uint64_t eval_start, eval_end; /* _PyEval_EvalFrameDefault's code, 0 if unknown */
    char module[PATH_MAX];   /* the file that holds the runtime */
} spp_target;

/* Opens pid; on failure returns the spp_target_error and writes a sentence
 * into err (no trailing newline). */
int spp_target_open(spp_target *t, pid_t pid, char *err, size_t errlen);

typedef struct spp_pythread {
    uint64_t tstate;
    uint64_t frame;       /* current frame, 0 if none */
    uint64_t below;       /* what spp_walk checks the chain against */
    uint64_t thread_id;   /* the pthread_t as Python knows it (threading.get_ident) */
    pid_t tid;            /* OS thread id, 0 if unknown */
    int holds_gil;
} spp_pythread;

/* Lists the main interpreter's threads. Returns how many were stored (at
 * most cap), or < 0 if the runtime could not be read. */
int spp_target_threads(const spp_target *t, const spp_reader *r, spp_pythread *out, int cap);

/* "3.11.7" or "3.11" */
void spp_version_string(uint32_t version, char *buf, size_t n);

#endif
