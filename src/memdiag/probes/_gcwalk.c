/* memdiag.probes._gcwalk: gc.get_objects() / gc.get_referrers(obj) without the tuples
 * another thread may still be building.
 *
 * Those lists hold a new reference to every object, including a tuple that another thread
 * is filling with tuple(generator) (PySequence_Tuple): its _PyTuple_Resize requires a
 * reference count of 1 and raises "SystemError: bad argument to internal function" in the
 * host's code if the thread runs while the list is alive; its unfilled slots are NULL. A
 * Python walk of the list is only safe while no other thread runs, i.e. while it finishes
 * within the switch interval (exclusive_gil): not on a big heap on a loaded machine.
 *
 * Here the list is taken and filtered in one C call, with the collector disabled and no
 * Python code run (the GIL is never released): every exact tuple whose only references are
 * its builder's and the list's (Py_REFCNT <= 2 while in the list) is left out, so whatever
 * the caller does with the result, no thread switch can hand it a tuple under construction.
 * This also leaves out complete tuples held by one reference only (an argument tuple, an
 * item of a list, a key of a dict): the walks over the result look for containers, Popen
 * objects and named referrers (dicts, types, cells), never tuples, so they lose nothing;
 * the census gets its counts by type (tuples included) from this same pass.
 *
 * objects(count) -> (list, counts): counts is [(type, n), ...] over every tracked object
 *     (None if not count); pairs, not a dict: a metaclass's __hash__ would run Python code.
 * referrers(obj) -> list
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static PyObject *get_objects, *get_referrers;

static int building(PyObject *o) { return PyTuple_CheckExact(o) && Py_REFCNT(o) <= 2; }

/* Counts by type address: open addressing, grown at half full. */
typedef struct {
    PyTypeObject **keys;
    Py_ssize_t *counts;
    size_t mask, used;
} tcount;

static size_t tc_hash(const void *p) { return (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ULL); }

static int tc_alloc(tcount *t, size_t cap) {
    t->keys = PyMem_Calloc(cap, sizeof(PyTypeObject *));
    t->counts = PyMem_Calloc(cap, sizeof(Py_ssize_t));
    t->mask = cap - 1;
    t->used = 0;
    if (t->keys == NULL || t->counts == NULL) {
        PyMem_Free(t->keys);
        PyMem_Free(t->counts);
        t->keys = NULL;
        t->counts = NULL;
        return -1;
    }
    return 0;
}

static void tc_put(tcount *t, PyTypeObject *tp, Py_ssize_t n) {
    size_t i = tc_hash(tp) & t->mask;
    while (t->keys[i] != NULL && t->keys[i] != tp) i = (i + 1) & t->mask;
    if (t->keys[i] == NULL) {
        t->keys[i] = tp;
        t->used++;
    }
    t->counts[i] += n;
}

static int tc_add(tcount *t, PyTypeObject *tp) {
    if ((t->used + 1) * 2 > t->mask + 1) {
        tcount old = *t;
        if (tc_alloc(t, (old.mask + 1) * 2) < 0) {
            *t = old;
            return -1;
        }
        for (size_t i = 0; i <= old.mask; i++)
            if (old.keys[i] != NULL) tc_put(t, old.keys[i], old.counts[i]);
        PyMem_Free(old.keys);
        PyMem_Free(old.counts);
    }
    tc_put(t, tp, 1);
    return 0;
}

static PyObject *tc_pairs(tcount *t) {
    PyObject *out = PyList_New(0);
    for (size_t i = 0; out != NULL && i <= t->mask; i++) {
        if (t->keys[i] == NULL) continue;
        PyObject *pair = Py_BuildValue("(On)", (PyObject *)t->keys[i], t->counts[i]);
        if (pair == NULL || PyList_Append(out, pair) < 0) Py_CLEAR(out);
        Py_XDECREF(pair);
    }
    return out;
}

/* all (a list) without the tuples that may be under construction; counts if t != NULL. */
static PyObject *filtered(PyObject *all, tcount *t) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(all); i++) {
        PyObject *o = PyList_GET_ITEM(all, i);
        if (t != NULL && tc_add(t, Py_TYPE(o)) < 0) {
            PyErr_NoMemory();
            Py_DECREF(out);
            return NULL;
        }
        if (building(o)) continue; /* judged before our own list adds a reference */
        if (PyList_Append(out, o) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* Dropping `all` runs no code: every object in it had a reference before the list was made. */
static PyObject *take(PyObject *fn, PyObject *arg, tcount *t) {
    int was_enabled = PyGC_Disable();
    PyObject *all = arg == NULL ? PyObject_CallNoArgs(fn) : PyObject_CallOneArg(fn, arg);
    PyObject *out = NULL;
    if (all != NULL && !PyList_CheckExact(all))
        PyErr_SetString(PyExc_TypeError, "gc did not return a list");
    else if (all != NULL)
        out = filtered(all, t);
    Py_XDECREF(all);
    if (was_enabled) PyGC_Enable();
    return out;
}

static PyObject *objects(PyObject *self, PyObject *arg) {
    int count = PyObject_IsTrue(arg);
    if (count < 0) return NULL;
    tcount t = {NULL, NULL, 0, 0};
    if (count && tc_alloc(&t, 1024) < 0) return PyErr_NoMemory();
    PyObject *result = NULL, *pairs = NULL;
    PyObject *objs = take(get_objects, NULL, count ? &t : NULL);
    if (objs != NULL && count) pairs = tc_pairs(&t);
    if (objs != NULL && (pairs != NULL || !count)) result = PyTuple_Pack(2, objs, count ? pairs : Py_None);
    Py_XDECREF(objs);
    Py_XDECREF(pairs);
    PyMem_Free(t.keys);
    PyMem_Free(t.counts);
    return result;
}

static PyObject *referrers(PyObject *self, PyObject *obj) { return take(get_referrers, obj, NULL); }

static PyMethodDef methods[] = {
    {"objects", objects, METH_O, "objects(count) -> (gc.get_objects() without tuples under construction, [(type, n)] or None)"},
    {"referrers", referrers, METH_O, "referrers(obj) -> gc.get_referrers(obj) without tuples under construction"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_gcwalk", "The collector's lists, safe to walk.", -1, methods};

PyMODINIT_FUNC PyInit__gcwalk(void) {
    PyObject *gc = PyImport_ImportModule("gc");
    if (gc == NULL) return NULL;
    get_objects = PyObject_GetAttrString(gc, "get_objects");
    get_referrers = PyObject_GetAttrString(gc, "get_referrers");
    Py_DECREF(gc);
    if (get_objects == NULL || get_referrers == NULL) return NULL;
    return PyModule_Create(&module);
}
