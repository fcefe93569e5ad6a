/* A thread created in C that calls a Python function n times, taking and
 * releasing the GIL each time with PyGILState_Ensure/Release (as a C
 * library's callbacks do): each call runs under a new PyThreadState, which
 * is freed after it. Between calls it holds on to some memory of a thread
 * state's size, so that the next state is not at the freed one's address.
 * test_nonblocking.py builds and loads it with ctypes.PyDLL. */
#include <Python.h>
#include <pthread.h>
#include <stdlib.h>

static PyObject *callback;
static int calls;
static pthread_t thread;
static void *held[1024];

static void *run(void *arg)
{
    (void)arg;
    for (int i = 0; i < calls; i++) {
        PyGILState_STATE g = PyGILState_Ensure();
        PyObject *r = PyObject_CallNoArgs(callback);
        if (!r)
            PyErr_Print();
        Py_XDECREF(r);
        PyGILState_Release(g);
        held[i % 1024] = malloc(512);
    }
    return NULL;
}

int start_calls(PyObject *f, int n)
{
    callback = f;
    calls = n;
    return pthread_create(&thread, NULL, run, NULL);
}

int join_calls(void)
{
    int rc = pthread_join(thread, NULL);
    for (int i = 0; i < 1024; i++)
        free(held[i]);
    return rc;
}
