#define PY_SSIZE_T_CLEAN
#include <Python.h>
/* C code for the --native tests: a function that burns CPU on its own, and
 * one that calls back into Python. Not static, so that their names are in
 * the dynamic symbol table as well as .symtab. */
__attribute__((noinline)) unsigned long nativeburn_spin_cpu(unsigned long n)
{
    volatile unsigned long x = 0;
    for (unsigned long i = 0; i < n; i++)
        x += i * i;
    return x;
}
__attribute__((noinline)) PyObject *nativeburn_spin(PyObject *m, PyObject *args)
{
    unsigned long n;
    if (!PyArg_ParseTuple(args, "k", &n)) return NULL;
    return PyLong_FromUnsignedLong(nativeburn_spin_cpu(n));
}
__attribute__((noinline)) PyObject *nativeburn_call_back(PyObject *m, PyObject *args)
{
    PyObject *cb; long n;
    if (!PyArg_ParseTuple(args, "Ol", &cb, &n)) return NULL;
    for (long i = 0; i < n; i++) {
        PyObject *r = PyObject_CallNoArgs(cb);
        if (!r) return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}
static PyMethodDef methods[] = {{"spin", nativeburn_spin, METH_VARARGS, NULL},
                                {"call_back", nativeburn_call_back, METH_VARARGS, NULL}, {0}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "nativeburn", NULL, -1, methods};
PyMODINIT_FUNC PyInit_nativeburn(void) { return PyModule_Create(&mod); }
