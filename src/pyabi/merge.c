/* merge.c - merging Python and native frames into one stack. */
#include "merge.h"

#include <string.h>

#include "../core/profile.h"

int spp_merge_is_glue(const char *name)
{
    static const char *const prefixes[] = {
        "_PyEval_", "PyEval_", "_PyObject_Call", "PyObject_Call", "_PyObject_Vectorcall",
        "PyObject_Vectorcall", "_PyObject_MakeTpCall", "_PyObject_FastCall", "PyObject_FastCall",
        "_PyFunction_Vectorcall", "_PyVectorcall", "PyVectorcall", "_Py_Vectorcall", "_Py_VectorCall",
        "method_vectorcall", "cfunction_call", "cfunction_vectorcall", "vectorcall_",
        "slot_tp_", "call_function", "do_call_core", "object_vacall", "_PyCFunction",
        "PyCFunction_Call", "wrapperdescr_call", "wrapper_call", "method_call",
        "builtin_exec", "run_eval_code_obj", "run_mod", "pyrun_", "PyRun_", "_PyRun_",
        "Py_RunMain", "pymain_", "Py_BytesMain", "thread_run", "_PyEval_Vector",
        "function_code_fastcall", /* 3.9 */
    };
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

/* Appends raw's frame to out unless the caller leaves it out; returns the
 * new count. */
static uint32_t put_python(const spp_merge_ops *ops, const spp_rawframe *raw, uint32_t *out,
                           uint32_t n)
{
    uint32_t frame;
    if (ops->python(ops->ctx, raw, &frame) == 0)
        out[n++] = frame;
    return n;
}

uint32_t spp_merge(const spp_merge_ops *ops, const spp_merge_in *in, uint32_t *out, uint32_t cap)
{
    uint32_t n = 0, pi = 0;
    /* Glue is kept only as the innermost frames (the thread was in the
     * calling machinery itself); above any other frame it is left out. */
    int past_leaf = 0, seen_python = 0;
    for (uint32_t ni = 0; ni < in->nnative && n < cap; ni++) {
        uint64_t ip = in->native[ni];
        if (ip >= ops->eval_start && ip < ops->eval_end) {
            /* This call of the evaluation loop ran the Python frames up to
             * and including the next one marked as its entry. */
            while (pi < in->npy && n < cap) {
                int entry = in->entries[pi];
                n = put_python(ops, &in->py[pi++], out, n);
                if (entry)
                    break;
            }
            past_leaf = seen_python = 1;
            continue;
        }
        const spp_native_sym *sym = ops->native(ops->ctx, ip, ni == 0);
        if (!sym || (sym->glue && past_leaf))
            continue;
        if (pi >= in->npy && seen_python)
            break; /* below the outermost Python frame: process start-up */
        out[n++] = sym->frame;
        past_leaf |= !sym->glue;
    }
    /* Python frames the native stack did not reach (unwinding stopped
     * early, or there was none) keep their place, outermost last. */
    for (; pi < in->npy && n < cap; pi++)
        n = put_python(ops, &in->py[pi], out, n);
    return n;
}
