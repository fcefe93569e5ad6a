/* module.c - the CPython extension _spprof: argument parsing, the Profile
 * data type, and turning error codes into exceptions. No sampling logic. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../core/profile.h"
#include "../formats/formats.h"
#include "../inproc/sampler.h"
#include "../pyabi/offsets.h"
#include "../pyabi/values.h"
#include "../pyabi/walker.h"

/* The layout of the running interpreter, found once at import. */
static spp_pyoffsets offsets;
static int offsets_ok;
static char offsets_error[200];

static destructor code_dealloc_orig;

static void code_dealloc_hook(PyObject *code)
{
    /* Samples may still refer to this code object; resolve them while it is
     * alive, and forget it so a new object at this address is read anew. */
    spp_sampler_code_dying((uint64_t)(uintptr_t)code);
    code_dealloc_orig(code);
}

static void install_code_hook(void)
{
    if (!code_dealloc_orig) {
        code_dealloc_orig = PyCode_Type.tp_dealloc;
        PyCode_Type.tp_dealloc = code_dealloc_hook;
    }
}

static int find_offsets(void)
{
#if PY_VERSION_HEX >= 0x030d0000
    void *runtime = dlsym(RTLD_DEFAULT, "_PyRuntime");
    if (!runtime) {
        snprintf(offsets_error, sizeof(offsets_error), "_PyRuntime not found: %s", dlerror());
        return -1;
    }
    int guessed = 0;
    int rc = spp_pyoffsets_from_debug(&offsets, runtime, SPP_DEBUG_OFFSETS_MAX, &guessed);
    if (rc == 0 && guessed)
        PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                         "spprof does not know Python %d.%d yet; reading it with the layout of "
                         "the newest version it knows (its debug offsets validated)",
                         PY_MAJOR_VERSION, PY_MINOR_VERSION);
    if (rc < 0) {
        snprintf(offsets_error, sizeof(offsets_error),
                 "the interpreter's debug offsets for Python %d.%d are not usable (%s)",
                 PY_MAJOR_VERSION, PY_MINOR_VERSION,
                 rc == SPP_ENOSYS ? "layout not known to this spprof" : "failed validation");
        return -1;
    }
    return 0;
#else
    const spp_pyoffsets *row = spp_pyoffsets_for_version(PY_VERSION_HEX);
    if (!row) {
        snprintf(offsets_error, sizeof(offsets_error), "no layout for Python %d.%d",
                 PY_MAJOR_VERSION, PY_MINOR_VERSION);
        return -1;
    }
    offsets = *row;
    return 0;
#endif
}

/* The pthread key CPython keeps each thread's PyThreadState under (the
 * "autoTSSkey"). Found by value rather than by layout: it is the key whose
 * value in this thread is this thread's state. */
static int find_tss_key(void)
{
    void *mine = PyGILState_GetThisThreadState();
    if (!mine)
        return -1;
    for (int k = 0; k < PTHREAD_KEYS_MAX; k++)
        if (pthread_getspecific((pthread_key_t)k) == mine)
            return k;
    return -1;
}

/* 3.15+ keep the thread's state in a C thread-local variable instead of a
 * pthread key. Static TLS sits at a fixed distance from the thread pointer
 * in every thread, so find that distance here, by value: with the GIL
 * released (so the "attached" thread state variable is NULL and only the
 * one the handler needs still holds our state), look for our PyThreadState
 * pointer near the thread pointer, reading through process_vm_readv so that
 * unmapped pages are skipped rather than faulted on. */
static int find_tls_offset(int64_t *offset)
{
    void *mine = PyGILState_GetThisThreadState();
    if (!mine)
        return -1;
    const uint64_t span = 64 * 1024;
    uint64_t tp = (uint64_t)(uintptr_t)__builtin_thread_pointer();
    uint64_t lo = tp - span, hi = tp + span;
    unsigned char *buf = PyMem_Malloc(4096);
    int found = 0;
    if (!buf)
        return -1;
    Py_BEGIN_ALLOW_THREADS
    for (uint64_t page = lo & ~(uint64_t)4095; page < hi && !found; page += 4096) {
        struct iovec local = {buf, 4096}, remote = {(void *)(uintptr_t)page, 4096};
        if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != 4096)
            continue;
        for (unsigned i = 0; i + 8 <= 4096; i += 8) {
            void *v;
            memcpy(&v, buf + i, sizeof(v));
            if (v == mine) {
                *offset = (int64_t)(page + i) - (int64_t)tp;
                found = 1;
                break;
            }
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(buf);
    return found ? 0 : -1;
}

static void eval_range(uint64_t *start, uint64_t *end)
{
    *start = *end = 0;
    void *sym = dlsym(RTLD_DEFAULT, "_PyEval_EvalFrameDefault");
    Dl_info info;
    const ElfW(Sym) *es = NULL;
    if (sym && dladdr1(sym, &info, (void **)&es, RTLD_DL_SYMENT) && es) {
        *start = (uint64_t)(uintptr_t)sym;
        *end = *start + es->st_size;
    }
}

static PyObject *error_with_errno(PyObject *type, const char *what)
{
    return PyErr_Format(type, "%s: %s", what, strerror(errno));
}

/* ---- ProfileData ---- */

typedef struct {
    PyObject_HEAD
    spp_profile *p; /* owned */
} ProfileData;

static void pd_dealloc(ProfileData *self)
{
    spp_profile_free(self->p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int parse_write_opts(PyObject *kw_lines, int full, int threads, spp_write_opts *o)
{
    spp_write_opts_default(o);
    o->lines = PyObject_IsTrue(kw_lines);
    o->full_filenames = full;
    o->thread_roots = threads;
    return o->lines < 0 ? -1 : 0;
}

static PyObject *pd_write(ProfileData *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"path", "format", "lines", "full_filenames", "thread_roots", NULL};
    PyObject *path_obj;
    const char *format;
    PyObject *lines = Py_True;
    int full = 0, threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&s|Opp", kwlist, PyUnicode_FSConverter, &path_obj,
                                     &format, &lines, &full, &threads))
        return NULL;
    spp_write_opts o;
    if (parse_write_opts(lines, full, threads, &o) < 0) {
        Py_DECREF(path_obj);
        return NULL;
    }
    const char *path = PyBytes_AS_STRING(path_obj);
    if (!spp_writer_lookup(format)) {
        Py_DECREF(path_obj);
        return PyErr_Format(PyExc_ValueError, "unknown format %R", PyTuple_GET_ITEM(args, 1));
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = spp_write_file(self->p, path, format, &o);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        if (rc == SPP_ENOMEM) {
            PyErr_NoMemory();
        } else {
            PyObject *name = PyUnicode_DecodeFSDefault(path);
            if (name) {
                errno = -rc;
                PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
                Py_DECREF(name);
            }
        }
        Py_DECREF(path_obj);
        return NULL;
    }
    Py_DECREF(path_obj);
    Py_RETURN_NONE;
}

static PyObject *pd_render(ProfileData *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"format", "lines", "full_filenames", "thread_roots", NULL};
    const char *format;
    PyObject *lines = Py_True;
    int full = 0, threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|Opp", kwlist, &format, &lines, &full, &threads))
        return NULL;
    spp_write_opts o;
    if (parse_write_opts(lines, full, threads, &o) < 0)
        return NULL;
    spp_writer_fn fn = spp_writer_lookup(format);
    if (!fn)
        return PyErr_Format(PyExc_ValueError, "unknown format '%s'", format);
    spp_out out;
    spp_out_open_mem(&out);
    if (fn(self->p, &out, &o) < 0) {
        spp_out_abort(&out);
        return PyErr_NoMemory();
    }
    size_t len;
    char *buf = spp_out_take(&out, &len);
    if (!buf)
        return PyErr_NoMemory();
    PyObject *res = PyBytes_FromStringAndSize(buf, (Py_ssize_t)len);
    free(buf);
    return res;
}

static PyObject *pd_set_thread_name(ProfileData *self, PyObject *args)
{
    unsigned long long tid;
    const char *name;
    if (!PyArg_ParseTuple(args, "Ks", &tid, &name))
        return NULL;
    /* Only threads that were sampled get a name; others are not added. */
    for (uint32_t i = 0; i < spp_profile_nthreads(self->p); i++)
        if (spp_profile_thread_at(self->p, i)->tid == tid) {
            spp_profile_thread(self->p, tid, name);
            break;
        }
    Py_RETURN_NONE;
}

static PyObject *frame_tuple(const spp_profile *p, const spp_frame *f)
{
    static const char *const kinds[] = {"python", "native", "thread", "other"};
    return Py_BuildValue("(ssiis)", spp_profile_string(p, f->name, NULL),
                         spp_profile_string(p, f->file, NULL), f->line, f->first_line,
                         kinds[f->kind & 3]);
}

/* [(tid, thread name or None, (frames root-first), count, weight_ns)] */
static PyObject *pd_stacks(ProfileData *self, PyObject *unused)
{
    (void)unused;
    const spp_profile *p = self->p;
    uint32_t nframes = spp_profile_nframes(p);
    PyObject *frames = PyList_New(nframes);
    PyObject *result = PyList_New(0);
    uint32_t *ids = PyMem_Malloc(sizeof(uint32_t) * 4096);
    if (!frames || !result || !ids)
        goto fail;
    for (uint32_t i = 0; i < nframes; i++) {
        PyObject *t = frame_tuple(p, spp_profile_frame_at(p, i));
        if (!t)
            goto fail;
        PyList_SET_ITEM(frames, i, t);
    }
    for (uint32_t s = 0; s < spp_profile_nstacks(p); s++) {
        const spp_stack *st = spp_profile_stack_at(p, s);
        if (!st->self_count)
            continue;
        uint32_t depth = spp_profile_unwind(p, s, ids, 4096);
        PyObject *stack = PyTuple_New(depth);
        if (!stack)
            goto fail;
        for (uint32_t d = 0; d < depth; d++) {
            PyObject *f = PyList_GET_ITEM(frames, ids[d]);
            Py_INCREF(f);
            PyTuple_SET_ITEM(stack, d, f);
        }
        const spp_thread *t = spp_profile_thread_at(p, st->thread);
        PyObject *item = Py_BuildValue("(KzNKK)", (unsigned long long)t->tid,
                                       t->name == SPP_NONE ? NULL : spp_profile_string(p, t->name, NULL),
                                       stack, (unsigned long long)st->self_count,
                                       (unsigned long long)st->self_weight);
        if (!item || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    PyMem_Free(ids);
    Py_DECREF(frames);
    return result;
fail:
    PyMem_Free(ids);
    Py_XDECREF(frames);
    Py_XDECREF(result);
    return NULL;
}

static PyObject *pd_info(ProfileData *self, PyObject *unused)
{
    (void)unused;
    const spp_profile *p = self->p;
    const spp_meta *m = spp_profile_meta(p);
    return Py_BuildValue("{sKsKsKsIsIsIsnsssKsKsi}", "samples",
                         (unsigned long long)spp_profile_samples(p), "weight_ns",
                         (unsigned long long)spp_profile_weight(p), "dropped",
                         (unsigned long long)spp_profile_dropped(p), "threads",
                         spp_profile_nthreads(p), "stacks", spp_profile_nstacks(p), "frames",
                         spp_profile_nframes(p), "memory", (Py_ssize_t)spp_profile_memory(p),
                         "mechanism", m->mechanism ? m->mechanism : "none", "start_ns",
                         (unsigned long long)m->start_ns, "end_ns", (unsigned long long)m->end_ns,
                         "timeline", spp_profile_timeline_kept(p));
}

static PyMethodDef pd_methods[] = {
    {"write", (PyCFunction)(void (*)(void))pd_write, METH_VARARGS | METH_KEYWORDS,
     "write(path, format, lines=True, full_filenames=False, thread_roots=False)"},
    {"render", (PyCFunction)(void (*)(void))pd_render, METH_VARARGS | METH_KEYWORDS,
     "render(format, ...) -> bytes"},
    {"set_thread_name", (PyCFunction)pd_set_thread_name, METH_VARARGS, NULL},
    {"stacks", (PyCFunction)pd_stacks, METH_NOARGS, NULL},
    {"info", (PyCFunction)pd_info, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ProfileDataType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "spprof._spprof.ProfileData",
    .tp_basicsize = sizeof(ProfileData),
    .tp_dealloc = (destructor)pd_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A recorded profile held in C (the engine's profile model).",
    .tp_methods = pd_methods,
};

/* ---- sampler control ---- */

/* os.exec* while sampling: the clocks' signals still pending or on their
 * way (a perf trap is sent on the next return to user mode) would reach
 * the new program, whose handlers are back at their defaults, and end it.
 * spprof.stop() ends the session first, and saves its profile as at exit.
 * An error of spprof's own (an Exception) does not stop the exec (an
 * audit hook's exception would); any other exception, KeyboardInterrupt
 * (Ctrl-C while the profile was saved) or SystemExit, does, as it would
 * have stopped the program at any other call. */
static int audit_hook(const char *event, PyObject *args, void *data)
{
    (void)args;
    (void)data;
    if (strcmp(event, "os.exec") != 0 || !spp_sampler_active())
        return 0;
    PyObject *name = PyUnicode_FromString("spprof");
    PyObject *mod = name ? PyImport_GetModule(name) : NULL;
    PyObject *r = mod ? PyObject_CallMethod(mod, "_stop_before_exec", NULL) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(mod);
    Py_XDECREF(name);
    int interrupted = PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception);
    if (!interrupted)
        PyErr_Clear();
    if (spp_sampler_active()) /* (the API could not stop it: no profile, but no signal either) */
        spp_profile_free(spp_sampler_stop(NULL));
    return interrupted ? -1 : 0;
}

/* Added by the first start(), not at import: with any hook in place every
 * audited event (id(), sys._getframe, open, ...) calls the hooks. */
static void add_audit_hook_once(void)
{
    static int added;
    if (added)
        return;
    added = 1;
    if (PySys_AddAuditHook(audit_hook, NULL) < 0)
        PyErr_Clear(); /* (another hook refused it: exec stays unguarded) */
}

static PyObject *m_start(PyObject *mod, PyObject *args, PyObject *kw)
{
    (void)mod;
    static char *kwlist[] = {"interval_ns", "memory_limit", "native", "mechanism", "empty",
                             "timeline", NULL};
    unsigned long long interval_ns, memory_limit;
    int native = 0, mechanism = 0, empty = 0, timeline = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KK|pipp", kwlist, &interval_ns, &memory_limit,
                                     &native, &mechanism, &empty, &timeline))
        return NULL;
    if (!offsets_ok)
        return PyErr_Format(PyExc_RuntimeError, "spprof cannot sample this interpreter: %s",
                            offsets_error);
    int key = find_tss_key();
    int64_t tls_offset = 0;
    if (key < 0 && find_tls_offset(&tls_offset) < 0)
        return PyErr_Format(PyExc_RuntimeError,
                            "spprof cannot find where this interpreter keeps each thread's state");
    install_code_hook();
    add_audit_hook_once();
    spp_sampler_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.interval_ns = interval_ns;
    cfg.memory_limit = (size_t)memory_limit;
    cfg.native = native;
    cfg.mechanism = mechanism;
    cfg.empty = empty;
    cfg.timeline = timeline;
    cfg.offsets = &offsets;
    cfg.code_type = (uint64_t)(uintptr_t)&PyCode_Type;
    cfg.tss_key = key;
    cfg.tls_offset = tls_offset;
    cfg.interp = (uint64_t)(uintptr_t)PyInterpreterState_Get();
    eval_range(&cfg.eval_start, &cfg.eval_end);
    int rc = spp_sampler_start(&cfg);
    if (rc == SPP_EINVAL && errno == EBUSY)
        return PyErr_Format(PyExc_RuntimeError,
                            "SIGPROF already has a handler in this process (another profiler, "
                            "or setitimer(ITIMER_PROF) code); spprof does not replace it");
    if (rc == SPP_EINVAL && errno == EEXIST)
        return PyErr_Format(PyExc_RuntimeError,
                            "an ITIMER_PROF timer (setitimer) is armed in this process: its "
                            "SIGPROF signals are the program's; spprof does not take them over "
                            "(disarm it with signal.setitimer(signal.ITIMER_PROF, 0) first)");
    if (rc == SPP_EINVAL && errno == EINVAL)
        return PyErr_Format(PyExc_ValueError, "interval_ns must be between 100000 and 10000000000, got %llu",
                            interval_ns);
    if (rc == SPP_EINVAL)
        return PyErr_Format(PyExc_RuntimeError, "profiler is already running");
    if (rc == SPP_ENOSYS)
        return PyErr_Format(PyExc_RuntimeError,
                            "native unwinding needs libunwind (Debian: libunwind8), "
                            "which could not be loaded");
    if (rc < 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *m_add_thread(PyObject *mod, PyObject *args)
{
    (void)mod;
    long long tid = -1;
    unsigned long long ident = 0;
    if (!PyArg_ParseTuple(args, "|LK", &tid, &ident))
        return NULL;
    if (tid < 0) {
        tid = (long long)syscall(SYS_gettid);
        ident = (unsigned long long)pthread_self();
    }
    int rc = spp_sampler_add_thread((pid_t)tid, (uint64_t)ident);
    /* Not running, a thread that just ended, or no room left for it (the
     * thread runs unsampled and is counted in the dropped samples). */
    if (rc == SPP_EINVAL || rc == SPP_EGONE || rc == SPP_ENOMEM)
        return PyLong_FromLong(0);
    if (rc < 0)
        return error_with_errno(PyExc_OSError, "cannot arm a sampling clock for the thread");
    return PyLong_FromLong(rc == SPP_EXISTS ? 2 : 1);
}

static PyObject *m_remove_thread(PyObject *mod, PyObject *args)
{
    (void)mod;
    long long tid = -1;
    if (!PyArg_ParseTuple(args, "|L", &tid))
        return NULL;
    if (tid < 0)
        tid = (long long)syscall(SYS_gettid);
    return PyBool_FromLong(spp_sampler_remove_thread((pid_t)tid) == 0);
}

static PyObject *m_stop(PyObject *mod, PyObject *args)
{
    (void)mod;
    const char *title;
    double interval_ms;
    if (!PyArg_ParseTuple(args, "sd", &title, &interval_ms))
        return NULL;
    spp_meta meta;
    memset(&meta, 0, sizeof(meta));
    meta.title = title;
    meta.clock = "cpu";
    meta.interval_ms = interval_ms;
    spp_sampler_stats st;
    Py_BEGIN_ALLOW_THREADS /* (it drains the rings, as the drain thread does: without the GIL) */
    spp_sampler_get_stats(&st);
    Py_END_ALLOW_THREADS
    meta.start_ns = st.start_ns;
    meta.end_ns = st.start_ns + st.elapsed_ns;
    if (st.mechanism == SPP_MECH_WALL)
        meta.clock = "wall";
    spp_profile *p;
    Py_BEGIN_ALLOW_THREADS
    p = spp_sampler_stop(&meta);
    Py_END_ALLOW_THREADS
    if (!p)
        return PyErr_Format(PyExc_RuntimeError, "profiler is not running");
    ProfileData *pd = PyObject_New(ProfileData, &ProfileDataType);
    if (!pd) {
        spp_profile_free(p);
        return NULL;
    }
    pd->p = p;
    return (PyObject *)pd;
}

static PyObject *m_handler_replaced(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    return PyLong_FromLong(spp_sampler_handler_replaced());
}

static PyObject *m_poll_counts(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    static const char *const names[] = {
        "by_poller_exit", "by_poller", "stopped_vdso_handed", "stopped_exit", "stopped",
        "running", "running_handed", "running_kept_exit", "handed_taken_vdso",
        "handed_taken_exit", "handed_taken"};
    _Static_assert(sizeof(names) / sizeof(names[0]) == SPP_POLL_NCOUNTS, "a name per count");
    uint64_t counts[SPP_POLL_NCOUNTS];
    spp_sampler_poll_counts(counts);
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < SPP_POLL_NCOUNTS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(counts[i]);
        if (!v || PyDict_SetItemString(d, names[i], v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *m_stats(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    spp_sampler_stats st;
    Py_BEGIN_ALLOW_THREADS /* (it drains the rings, as the drain thread does: without the GIL) */
    spp_sampler_get_stats(&st);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("{sOsKsKsKsKsKsIsnsssKsi}", "active", st.active ? Py_True : Py_False,
                         "samples", (unsigned long long)st.samples, "dropped",
                         (unsigned long long)st.dropped, "weight_ns",
                         (unsigned long long)st.weight_ns, "start_ns",
                         (unsigned long long)st.start_ns, "elapsed_ns",
                         (unsigned long long)st.elapsed_ns, "threads", st.threads, "memory",
                         (Py_ssize_t)st.memory, "mechanism", spp_sampler_clock_name(), "own_ns",
                         (unsigned long long)st.own_ns, "signal", st.signal);
}

static PyObject *m_native_available(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    return PyBool_FromLong(spp_native_available());
}

/* Test hook: the line spprof's own decoder gives for a byte offset into a
 * code object's bytecode, read through the same reader the sampler uses. */
static PyObject *m_addr2line(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *code;
    long long addr;
    if (!PyArg_ParseTuple(args, "O!L", &PyCode_Type, &code, &addr))
        return NULL;
    if (!offsets_ok)
        return PyErr_Format(PyExc_RuntimeError, "%s", offsets_error);
    spp_code c;
    if (spp_code_read(&offsets, &spp_local_reader, (uint64_t)(uintptr_t)code, &c) < 0)
        return PyErr_Format(PyExc_RuntimeError, "cannot read the code object");
    int line = spp_code_addr2line(&offsets, &c, addr);
    PyObject *res = Py_BuildValue("(ssi)", c.name, c.file, line);
    spp_code_clear(&c);
    return res;
}

static PyObject *m_hide(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *code;
    if (!PyArg_ParseTuple(args, "O!", &PyCode_Type, &code))
        return NULL;
    if (spp_sampler_hide_code((uint64_t)(uintptr_t)code) < 0)
        return PyErr_Format(PyExc_ValueError, "too many hidden code objects");
    Py_INCREF(code); /* kept for the life of the process */
    Py_RETURN_NONE;
}

/* Test hook: (repr, type) as `spprof dump --locals` shows an object, read
 * from this process's memory with this interpreter's layout. */
static PyObject *m_value_repr(PyObject *mod, PyObject *obj)
{
    (void)mod;
    if (!offsets_ok)
        return PyErr_Format(PyExc_RuntimeError, "%s", offsets_error);
    const spp_pytypes types = {
        .int_type = (uintptr_t)&PyLong_Type, .bool_type = (uintptr_t)&PyBool_Type,
        .float_type = (uintptr_t)&PyFloat_Type, .str_type = (uintptr_t)&PyUnicode_Type,
        .bytes_type = (uintptr_t)&PyBytes_Type, .cell_type = (uintptr_t)&PyCell_Type,
        .none = (uintptr_t)Py_None, .true_obj = (uintptr_t)Py_True, .false_obj = (uintptr_t)Py_False,
    };
    spp_value v;
    if (spp_value_read(&offsets, &spp_local_reader, &types, (uint64_t)(uintptr_t)obj, &v) < 0)
        return PyErr_Format(PyExc_RuntimeError, "unreadable: %s", v.repr);
    return Py_BuildValue("(ss)", v.repr, v.type);
}

/* Test hook: what spprof makes of a _Py_DebugOffsets image. */
static PyObject *m_parse_debug_offsets(PyObject *mod, PyObject *arg)
{
    (void)mod;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    spp_pyoffsets o;
    int guessed = 0;
    int rc = view.len >= 24 && memcmp(view.buf, "xdebugpy", 8) == 0
                 ? spp_pyoffsets_from_debug(&o, view.buf, (size_t)view.len, &guessed)
                 : SPP_EINVAL - 100;
    PyBuffer_Release(&view);
    if (rc == SPP_EINVAL - 100)
        return PyErr_Format(PyExc_ValueError, "not debug offsets (no xdebugpy cookie)");
    if (rc == SPP_ENOSYS)
        return PyErr_Format(PyExc_ValueError, "no known layout for this version");
    if (rc < 0)
        return PyErr_Format(PyExc_ValueError, "debug offsets failed validation");
    return Py_BuildValue("{sksOsi}", "version", (unsigned long)o.version, "guessed",
                         guessed ? Py_True : Py_False, "free_threaded", o.free_threaded);
}

static PyObject *m_layout(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    if (!offsets_ok)
        return PyErr_Format(PyExc_RuntimeError, "%s", offsets_error);
    uint32_t newest = 0;
    for (unsigned i = 0; i < spp_debug_layouts_len; i++) /* of this build's flavour */
        if (spp_debug_layouts[i].free_threaded == offsets.free_threaded &&
            spp_debug_layouts[i].version > newest)
            newest = spp_debug_layouts[i].version;
    return Py_BuildValue("{sksisisisk}", "version", (unsigned long)offsets.version, "frame_model",
                         offsets.frame_model, "line_model", offsets.line_model,
                         "free_threaded", offsets.free_threaded, "newest_known_layout",
                         (unsigned long)newest);
}

static PyMethodDef methods[] = {
    {"start", (PyCFunction)(void (*)(void))m_start, METH_VARARGS | METH_KEYWORDS,
     "start(interval_ns, memory_limit, native=False, mechanism=0, empty=False, timeline=False)"},
    {"add_thread", m_add_thread, METH_VARARGS,
     "add_thread(tid=current, ident=0) -> 1 armed, 2 already sampled, 0 not sampled\n"
     "(ident: the thread's threading.get_ident(), which the nonblocking clock needs)"},
    {"remove_thread", m_remove_thread, METH_VARARGS, "remove_thread(tid=current) -> bool"},
    {"stop", m_stop, METH_VARARGS, "stop(title, interval_ms) -> ProfileData"},
    {"stats", m_stats, METH_NOARGS, "live statistics"},
    {"poll_counts", m_poll_counts, METH_NOARGS,
     "how the polling clock's signals were judged since start() (sampler.h's SPP_POLL_*)"},
    {"handler_replaced", m_handler_replaced, METH_NOARGS,
     "the signal whose spprof handler the program replaced while sampling, or 0"},
    {"native_unwinding_available", m_native_available, METH_NOARGS, NULL},
    {"addr2line", m_addr2line, METH_VARARGS, NULL},
    {"layout", m_layout, METH_NOARGS, NULL},
    {"parse_debug_offsets", m_parse_debug_offsets, METH_O, NULL},
    {"value_repr", m_value_repr, METH_O, NULL},
    {"hide", m_hide, METH_VARARGS, "hide(code): leave this code's frames out of stacks"},
    {NULL, NULL, 0, NULL},
};

static void atfork_child(void) { spp_sampler_atfork_child(); }

static int exec_module(PyObject *m)
{
    if (PyType_Ready(&ProfileDataType) < 0)
        return -1;
    Py_INCREF(&ProfileDataType);
    if (PyModule_AddObject(m, "ProfileData", (PyObject *)&ProfileDataType) < 0) {
        Py_DECREF(&ProfileDataType);
        return -1;
    }
    static int once;
    if (!once) {
        once = 1;
        offsets_ok = find_offsets() == 0;
        pthread_atfork(NULL, NULL, atfork_child);
    }
    PyModule_AddIntConstant(m, "MECH_AUTO", SPP_MECH_AUTO);
    PyModule_AddIntConstant(m, "MECH_PERF", SPP_MECH_PERF);
    PyModule_AddIntConstant(m, "MECH_CPUTIMER", SPP_MECH_CPUTIMER);
    PyModule_AddIntConstant(m, "MECH_WALL", SPP_MECH_WALL);
    PyModule_AddIntConstant(m, "MECH_POLL", SPP_MECH_POLL);
    PyModule_AddIntConstant(m, "MECH_NONBLOCK", SPP_MECH_NONBLOCK);
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, (void *)exec_module},
#if PY_VERSION_HEX >= 0x030d0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_spprof", "spprof's C engine.", 0, methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__spprof(void) { return PyModuleDef_Init(&moduledef); }
