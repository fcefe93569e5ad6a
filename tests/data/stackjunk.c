#define PY_SSIZE_T_CLEAN
#include <Python.h>
/* Leaves stale non-pointer words on the stack, as any C code may, then calls
 * back into Python from the same depth. */
__attribute__((noinline)) static void fill(void)
{
    volatile uint64_t junk[1024];
    for (int i = 0; i < 1024; i++)
        junk[i] = 0x0000100000000000ull + (uint64_t)i * 64; /* canonical, unmapped */
}
static PyObject *fill_and_call(PyObject *m, PyObject *args)
{
    PyObject *cb; long n;
    if (!PyArg_ParseTuple(args, "Ol", &cb, &n)) return NULL;
    for (long i = 0; i < n; i++) {
        fill();
        PyObject *r = PyObject_CallNoArgs(cb);
        if (!r) return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}
static PyMethodDef methods[] = {{"fill_and_call", fill_and_call, METH_VARARGS, NULL}, {0}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "stackjunk", NULL, -1, methods};
PyMODINIT_FUNC PyInit_stackjunk(void) { return PyModule_Create(&mod); }
