/* memdiag.leaks._audit: the resource-origin audit hook, filtered in C.
 *
 * A Python audit hook (sys.addaudithook) runs for *every* audit event the interpreter
 * raises: time.sleep, sys._getframe (each logging record), object.__getattr__, os.listdir,
 * socket.connect, ... For each one CPython builds the event's name as a str, iterates the
 * hook list, looks up ``__cantrace__`` and calls the Python function, which returns at
 * once for all but three names (~0.5-1 us per event). This hook is a C function
 * (PySys_AddAuditHook): it compares the event name's bytes with the three names memdiag
 * records (open, socket.__new__, subprocess.Popen) and returns for the rest before any
 * Python runs. Only for those three does it call the Python callback given to install().
 *
 * Like a Python audit hook it cannot be removed; enable(False) makes it return at once.
 * It never fails the audited operation: an exception from the callback is cleared (the
 * caller's own pending exception is saved and restored around it by CPython). Only the
 * interpreter that installed it calls back (the hook is process-wide; a subinterpreter's
 * events are ignored).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *au_callback = NULL;       /* strong reference, kept for the process's life */
static PyInterpreterState *au_interp = NULL; /* the interpreter that installed the hook */
static int au_installed = 0;
static int au_enabled = 0;
static unsigned long long au_seen = 0;   /* events the hook saw (all names) */
static unsigned long long au_called = 0; /* events passed to the callback */

/* 1 for the three recorded names. The first byte decides most events without strcmp. */
static inline int au_wanted(const char *e) {
    switch (e[0]) {
    case 'o':
        return e[1] == 'p' && strcmp(e, "open") == 0;
    case 's':
        return (e[1] == 'o' && strcmp(e, "socket.__new__") == 0) || (e[1] == 'u' && strcmp(e, "subprocess.Popen") == 0);
    default:
        return 0;
    }
}

static int au_hook(const char *event, PyObject *args, void *data) {
    (void)data;
    au_seen++;
    if (!au_enabled || !au_wanted(event) || au_callback == NULL) return 0;
    if (PyInterpreterState_Get() != au_interp) return 0;
    au_called++;
    PyObject *name = PyUnicode_FromString(event);
    if (name == NULL) {
        PyErr_Clear();
        return 0;
    }
#if PY_VERSION_HEX >= 0x030B0000
    PyThreadState *ts = PyThreadState_Get();
    PyThreadState_EnterTracing(ts); /* as for Python audit hooks: no tracing in the hook */
#endif
    PyObject *res = PyObject_CallFunctionObjArgs(au_callback, name, args, NULL);
#if PY_VERSION_HEX >= 0x030B0000
    PyThreadState_LeaveTracing(ts);
#endif
    Py_DECREF(name);
    if (res == NULL) PyErr_Clear(); /* never fail the audited operation */
    else Py_DECREF(res);
    return 0;
}

static PyObject *au_install(PyObject *self, PyObject *callback) {
    if (!PyCallable_Check(callback)) {
        PyErr_SetString(PyExc_TypeError, "install expects a callable(event, args)");
        return NULL;
    }
    if (au_installed) {
        if (PyInterpreterState_Get() != au_interp) {
            PyErr_SetString(PyExc_RuntimeError, "the audit hook belongs to another interpreter");
            return NULL;
        }
        Py_INCREF(callback);
        Py_SETREF(au_callback, callback);
        au_enabled = 1;
        Py_RETURN_FALSE;
    }
    Py_INCREF(callback);
    au_callback = callback;
    au_interp = PyInterpreterState_Get();
    /* raises the sys.addaudithook event; a hook already installed may refuse it */
    if (PySys_AddAuditHook(au_hook, NULL) < 0) {
        Py_CLEAR(au_callback);
        au_interp = NULL;
        return NULL;
    }
    au_installed = 1;
    au_enabled = 1;
    Py_RETURN_TRUE;
}

static PyObject *au_enable(PyObject *self, PyObject *flag) {
    int on = PyObject_IsTrue(flag);
    if (on < 0) return NULL;
    int prev = au_enabled;
    au_enabled = on && au_installed;
    return PyBool_FromLong(prev);
}

static PyObject *au_stats(PyObject *self, PyObject *noargs) {
    return Py_BuildValue("{sOsOsKsK}", "installed", au_installed ? Py_True : Py_False, "enabled",
                         au_enabled ? Py_True : Py_False, "seen", au_seen, "called", au_called);
}

static PyObject *au_py_wanted(PyObject *self, PyObject *arg) {
    const char *e = PyUnicode_AsUTF8(arg);
    if (e == NULL) return NULL;
    return PyBool_FromLong(au_wanted(e));
}

static PyMethodDef au_methods[] = {
    {"install", au_install, METH_O,
     "install(callback) -> True if the hook was added now: callback(event, args) for open, socket.__new__ and "
     "subprocess.Popen only (a second call replaces the callback)"},
    {"enable", au_enable, METH_O, "enable(flag) -> previous: whether the hook calls back"},
    {"stats", au_stats, METH_NOARGS, "{installed, enabled, seen, called}: events seen and passed on"},
    {"wanted", au_py_wanted, METH_O, "wanted(name): whether the hook passes this event name on"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef au_module = {PyModuleDef_HEAD_INIT, "_audit",
                                       "The resource-origin audit hook, filtered by event name in C", -1, au_methods};

PyMODINIT_FUNC PyInit__audit(void) { return PyModule_Create(&au_module); }
