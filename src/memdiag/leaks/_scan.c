/* memdiag.leaks._scan: the container scan's walk over gc.get_objects(), in C.
 *
 * ``live._gather_containers`` walks every object the collector tracks, with every other
 * thread held off (exclusive_gil), to find the large containers: in Python that is ~0.2 s
 * per 300k objects, a stall of the whole service. This is the same walk at a few
 * nanoseconds per object. It runs no Python code: every call below is on exact built-in
 * types (len, first item, dict values), so the GIL is never released and the caller's
 * exclusivity holds. Same results as the Python loop (tests run both).
 *
 * gather(objs, types, ordered, cell_type, known, want, min_len), types and ordered tuples of
 * the exact container types (compared by identity), known and want iterables of ids
 *     -> (found: {id: (type, len)}, heads: {id: id of the first item}, picked: [objects])
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* A small open-addressing set of addresses (the ids in ``known`` and ``want``). */
typedef struct {
    uintptr_t *slots;
    size_t mask;
} ptrset;

static size_t ps_hash(uintptr_t p) { return (size_t)((p >> 4) * 0x9E3779B97F4A7C15ULL); }

static int ps_init(ptrset *s, PyObject *ids) {
    s->slots = NULL;
    s->mask = 0;
    Py_ssize_t n = PyObject_Length(ids);
    if (n < 0) return -1;
    size_t cap = 16;
    while (cap < (size_t)n * 2 + 2) cap <<= 1;
    s->slots = PyMem_Calloc(cap, sizeof(uintptr_t));
    if (s->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->mask = cap - 1;
    PyObject *it = PyObject_GetIter(ids);
    if (it == NULL) return -1;
    PyObject *k;
    while ((k = PyIter_Next(it)) != NULL) {
        uintptr_t p = (uintptr_t)PyLong_AsVoidPtr(k);
        Py_DECREF(k);
        if (p == 0 && PyErr_Occurred()) {
            Py_DECREF(it);
            return -1;
        }
        size_t i = ps_hash(p) & s->mask;
        while (s->slots[i] != 0 && s->slots[i] != p) i = (i + 1) & s->mask;
        s->slots[i] = p;
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static int ps_has(const ptrset *s, const void *o) {
    uintptr_t p = (uintptr_t)o;
    size_t i = ps_hash(p) & s->mask;
    while (s->slots[i] != 0) {
        if (s->slots[i] == p) return 1;
        i = (i + 1) & s->mask;
    }
    return 0;
}

typedef struct {
    PyObject *types, *ordered, *cell_type;
    ptrset known, want;
    Py_ssize_t min_len;
    PyObject *found, *heads, *picked;
} scan_t;

/* found[id(o)] = (type(o), n); picked.append(o) if wanted. */
static int record(scan_t *S, PyObject *o, Py_ssize_t n) {
    PyObject *key = PyLong_FromVoidPtr(o);
    if (key == NULL) return -1;
    PyObject *val = Py_BuildValue("(On)", (PyObject *)Py_TYPE(o), n);
    int rc = val == NULL ? -1 : PyDict_SetItem(S->found, key, val);
    Py_XDECREF(val);
    Py_DECREF(key);
    if (rc == 0 && ps_has(&S->want, o)) rc = PyList_Append(S->picked, o);
    return rc;
}

/* An untracked dict (only strings, bytes, numbers inside) reachable from a tracked one. */
static int maybe_untracked_dict(scan_t *S, PyObject *v) {
    if (!PyDict_CheckExact(v) || PyObject_GC_IsTracked(v)) return 0;
    Py_ssize_t n = PyDict_GET_SIZE(v);
    if (n >= S->min_len || ps_has(&S->known, v)) return record(S, v, n);
    return 0;
}

/* heads[id(o)] = id(first item) for an ordered container of n > 0 items. */
static int record_head(scan_t *S, PyObject *o) {
    PyObject *first = NULL;
    if (PyList_CheckExact(o)) {
        first = PyList_GET_ITEM(o, 0);
        Py_INCREF(first);
    } else {
        PyObject *it = PyObject_GetIter(o); /* dict, OrderedDict, defaultdict, deque: C iterators */
        if (it == NULL) return -1;
        first = PyIter_Next(it);
        Py_DECREF(it);
        if (first == NULL) return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *key = PyLong_FromVoidPtr(o);
    PyObject *val = PyLong_FromVoidPtr(first);
    Py_DECREF(first);
    int rc = (key == NULL || val == NULL) ? -1 : PyDict_SetItem(S->heads, key, val);
    Py_XDECREF(key);
    Py_XDECREF(val);
    return rc;
}

/* By identity, never by hash: a metaclass's __hash__ would run Python code here. */
static int one_of(PyObject *types, PyObject *tp) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(types); i++)
        if (PyTuple_GET_ITEM(types, i) == tp) return 1;
    return 0;
}

static int visit(scan_t *S, PyObject *o) {
    PyObject *tp = (PyObject *)Py_TYPE(o);
    if (one_of(S->types, tp)) {
        Py_ssize_t n = PyObject_Length(o);
        if (n < 0) return -1;
        if (n >= S->min_len || ps_has(&S->known, o)) {
            if (record(S, o, n) < 0) return -1;
            if (n > 0) {
                if (one_of(S->ordered, tp) && record_head(S, o) < 0) return -1;
            }
        }
        if (PyDict_CheckExact(o)) {
            Py_ssize_t pos = 0;
            PyObject *k, *v;
            while (PyDict_Next(o, &pos, &k, &v))
                if (maybe_untracked_dict(S, v) < 0) return -1;
        }
    } else if (tp == S->cell_type) {
        PyObject *v = PyCell_GET(o);
        if (v != NULL && maybe_untracked_dict(S, v) < 0) return -1;
    }
    return 0;
}

static PyObject *gather(PyObject *self, PyObject *args) {
    PyObject *objs, *known_ids, *want_ids;
    scan_t S;
    memset(&S, 0, sizeof S);
    if (!PyArg_ParseTuple(args, "O!O!O!OOOn:gather", &PyList_Type, &objs, &PyTuple_Type, &S.types,
                          &PyTuple_Type, &S.ordered, &S.cell_type, &known_ids, &want_ids, &S.min_len))
        return NULL;
    PyObject *result = NULL;
    if (ps_init(&S.known, known_ids) < 0 || ps_init(&S.want, want_ids) < 0) goto done;
    S.found = PyDict_New();
    S.heads = PyDict_New();
    S.picked = PyList_New(0);
    if (S.found == NULL || S.heads == NULL || S.picked == NULL) goto done;
    /* The list may not change under us (no Python code runs), but read its size each
     * time anyway: never index past the end. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objs); i++) {
        PyObject *o = PyList_GET_ITEM(objs, i);
        Py_INCREF(o);
        int rc = visit(&S, o);
        Py_DECREF(o);
        if (rc < 0) goto done;
    }
    result = PyTuple_Pack(3, S.found, S.heads, S.picked);
done:
    PyMem_Free(S.known.slots);
    PyMem_Free(S.want.slots);
    Py_XDECREF(S.found);
    Py_XDECREF(S.heads);
    Py_XDECREF(S.picked);
    return result;
}

/* gather_all(types, ordered, cell_type, known, want, min_len): gather() over gc.get_objects(),
 * taken and dropped inside this one call (the collector disabled meanwhile). No Python code
 * runs and the GIL is never released while the list is alive, so no other thread can see it
 * (or the tuples it may hold that another thread is still building: see probes/_gcwalk.c)
 * and dropping it runs no finalizer (every object had a reference before the list was made).
 * That is one pass over the heap less than _gcwalk.objects() + gather(): no filtered copy
 * of the list, and the caller needs no exclusive_gil (the GIL is held for this call only). */
static PyObject *get_objects;

static PyObject *gather_all(PyObject *self, PyObject *args) {
    PyObject *types, *ordered, *cell_type, *known_ids, *want_ids;
    Py_ssize_t min_len;
    if (!PyArg_ParseTuple(args, "O!O!OOOn:gather_all", &PyTuple_Type, &types, &PyTuple_Type, &ordered, &cell_type,
                          &known_ids, &want_ids, &min_len))
        return NULL;
    int was_enabled = PyGC_Disable();
    PyObject *objs = PyObject_CallNoArgs(get_objects);
    PyObject *result = NULL;
    if (objs != NULL && !PyList_CheckExact(objs)) {
        PyErr_SetString(PyExc_TypeError, "gc.get_objects() did not return a list");
    } else if (objs != NULL) {
        PyObject *inner = Py_BuildValue("(OOOOOOn)", objs, types, ordered, cell_type, known_ids, want_ids, min_len);
        if (inner != NULL) result = gather(self, inner);
        Py_XDECREF(inner);
    }
    Py_XDECREF(objs);
    if (was_enabled) PyGC_Enable();
    return result;
}

static PyMethodDef methods[] = {
    {"gather", gather, METH_VARARGS,
     "gather(objs, types, ordered, cell_type, known, want, min_len) -> (found, heads, picked)"},
    {"gather_all", gather_all, METH_VARARGS,
     "gather_all(types, ordered, cell_type, known, want, min_len) -> gather() over gc.get_objects(), in one call"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", "The container scan's walk, in C.", -1, methods};

PyMODINIT_FUNC PyInit__scan(void) {
    PyObject *gc = PyImport_ImportModule("gc");
    if (gc == NULL) return NULL;
    get_objects = PyObject_GetAttrString(gc, "get_objects");
    Py_DECREF(gc);
    if (get_objects == NULL) return NULL;
    return PyModule_Create(&module);
}
