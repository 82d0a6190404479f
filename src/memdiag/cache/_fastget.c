/* memdiag.cache._fastget: SharedPromptCache.get's lock-free hit, in C.
 *
 * Optional (fastpaths.py falls back to its pure-Python get when this does not build or
 * load). install(cls, py_get, counts_hits, miss_is_final) puts a method descriptor named
 * "get" on one of fastpaths.py's classes. It does exactly what the Python get's lock-free
 * part does, and hands every other case to py_get (the Python get, which looks again):
 *
 *   key an exact str and no queued re-entrant write
 *   e = hot_table.get(key)            (hot table: self._hot_get.__self__)
 *   hit, entry not serialised, unexpired (by fastpaths._monotonic, as the Python get):
 *       hot_table.move_to_end(key) (a KeyError: moved away meanwhile, ignored),
 *       e[FREQ] += 1 (TinyLFU), self._hits += 1, return e[VALUE]
 *   miss and miss_is_final (LRU: the hot table is the whole cache):
 *       self._misses += 1, return default
 *
 * It runs no Python code and allocates only untracked ints, so with the GIL it is one
 * atomic step for other threads and the garbage collector (fastpaths.py's argument, made
 * stronger). It holds no memory of its own beyond this module's few static words: no
 * per-cache or per-entry state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define VALUE 0
#define EXPIRES 2
#define FLAGS 3
#define FREQ 4
#define F_PICKLED 1
#define F_EXPIRES 2

/* Slot offsets of SharedPromptCache, read from its member descriptors at install(). */
static Py_ssize_t off_pending = -1, off_hot_get, off_hot_mte, off_hits, off_misses;

typedef struct {
    PyObject *py_get; /* the Python get: every case this path does not answer */
    int counts_hits;  /* TinyLFU: e[FREQ] += 1 */
    int miss_is_final;
} Conf;

static Conf conf_lru, conf_tinylfu;
static PyObject *globals, *clock_name; /* fastpaths.py's globals, "_monotonic" */

#define SLOT(self, off) (*(PyObject **)((char *)(self) + (off)))

/* *slot += 1 for an exact int (a slot of the cache, or an entry's FREQ item). */
static int incr_slot(PyObject **slot) {
    PyObject *old = *slot;
    if (old == NULL || !PyLong_CheckExact(old)) {
        PyErr_SetString(PyExc_TypeError, "memdiag cache: counter is not an int");
        return -1;
    }
    Py_ssize_t v = PyLong_AsSsize_t(old);
    if (v == -1 && PyErr_Occurred()) return -1;
    PyObject *n = PyLong_FromSsize_t(v + 1);
    if (n == NULL) return -1;
    *slot = n;
    Py_DECREF(old);
    return 0;
}

static PyObject *slow(Conf *c, PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *stack[3];
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs; i++) stack[i + 1] = args[i];
    return PyObject_Vectorcall(c->py_get, stack, nargs + 1, NULL);
}

static PyObject *fast_get(Conf *c, PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) return slow(c, self, args, nargs);
    PyObject *key = args[0];
    if (!PyUnicode_CheckExact(key)) return slow(c, self, args, nargs);
    PyObject *pending = SLOT(self, off_pending);
    if (pending == NULL || !PyList_CheckExact(pending) || PyList_GET_SIZE(pending))
        return slow(c, self, args, nargs);
    PyObject *hot_get = SLOT(self, off_hot_get);
    if (hot_get == NULL || !PyCFunction_Check(hot_get)) return slow(c, self, args, nargs);
    PyObject *table = PyCFunction_GET_SELF(hot_get);
    if (table == NULL || !PyDict_Check(table)) return slow(c, self, args, nargs);
    PyObject *e = PyDict_GetItemWithError(table, key); /* borrowed; str keys: no Python code */
    if (e == NULL) {
        if (PyErr_Occurred()) return NULL;
        if (!c->miss_is_final) return slow(c, self, args, nargs);
        if (incr_slot(&SLOT(self, off_misses)) < 0) {
            PyErr_Clear();
            return slow(c, self, args, nargs);
        }
        PyObject *dflt = nargs > 1 ? args[1] : Py_None;
        return Py_NewRef(dflt);
    }
    PyObject **items;
    if (PyList_CheckExact(e) && PyList_GET_SIZE(e) >= 6)
        items = ((PyListObject *)e)->ob_item;
    else if (PyTuple_CheckExact(e) && PyTuple_GET_SIZE(e) >= 6)
        items = ((PyTupleObject *)e)->ob_item;
    else
        return slow(c, self, args, nargs);
    PyObject *flags = items[FLAGS];
    if (!PyLong_CheckExact(flags)) return slow(c, self, args, nargs);
    long f = PyLong_AsLong(flags);
    if (f) {
        if (f & ~F_EXPIRES) return slow(c, self, args, nargs); /* pickled: decode in Python */
        PyObject *exp = items[EXPIRES];
        if (!PyFloat_CheckExact(exp)) return slow(c, self, args, nargs);
        /* fastpaths._monotonic (time.monotonic; tests swap in a fake clock) */
        PyObject *clock = PyDict_GetItemWithError(globals, clock_name);
        if (clock == NULL) return PyErr_Occurred() ? NULL : slow(c, self, args, nargs);
        PyObject *now = PyObject_CallNoArgs(clock);
        if (now == NULL) return NULL;
        double t = PyFloat_AsDouble(now);
        Py_DECREF(now);
        if (t == -1.0 && PyErr_Occurred()) return NULL;
        if (!(PyFloat_AS_DOUBLE(exp) > t)) return slow(c, self, args, nargs); /* expired: freed under the lock */
    }
    Py_INCREF(e); /* keep it while move_to_end runs */
    PyObject *r = PyObject_CallOneArg(SLOT(self, off_hot_mte), key);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
            Py_DECREF(e);
            return NULL;
        }
        PyErr_Clear(); /* removed or demoted meanwhile: the read still happened first */
    } else {
        Py_DECREF(r);
    }
    if (c->counts_hits && PyList_CheckExact(e)) {
        if (incr_slot(&items[FREQ]) < 0) {
            Py_DECREF(e);
            return NULL;
        }
    }
    if (incr_slot(&SLOT(self, off_hits)) < 0) {
        Py_DECREF(e);
        return NULL;
    }
    PyObject *v = Py_NewRef(items[VALUE]);
    Py_DECREF(e);
    return v;
}

static PyObject *lru_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return fast_get(&conf_lru, self, args, nargs);
}

static PyObject *tinylfu_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return fast_get(&conf_tinylfu, self, args, nargs);
}

#define GET_DOC "get(key, default=None)\n--\n\nReturn the value cached under key, or default (C fast path)."
static PyMethodDef lru_def = {"get", (PyCFunction)(void (*)(void))lru_get, METH_FASTCALL, GET_DOC};
static PyMethodDef tinylfu_def = {"get", (PyCFunction)(void (*)(void))tinylfu_get, METH_FASTCALL, GET_DOC};

static int slot_offset(PyObject *cls, const char *name, Py_ssize_t *out) {
    PyObject *d = PyObject_GetAttrString(cls, name);
    if (d == NULL) return -1;
    if (!Py_IS_TYPE(d, &PyMemberDescr_Type) || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        Py_DECREF(d);
        PyErr_Format(PyExc_TypeError, "%s is not an object slot", name);
        return -1;
    }
    *out = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    return 0;
}

static PyObject *install(PyObject *mod, PyObject *args) {
    PyObject *cls, *py_get, *g;
    int counts_hits, miss_is_final;
    if (!PyArg_ParseTuple(args, "O!OppO!", &PyType_Type, &cls, &py_get, &counts_hits, &miss_is_final, &PyDict_Type, &g))
        return NULL;
    if (clock_name == NULL && (clock_name = PyUnicode_InternFromString("_monotonic")) == NULL) return NULL;
    Py_XSETREF(globals, Py_NewRef(g));
    if (slot_offset(cls, "_pending", &off_pending) < 0 || slot_offset(cls, "_hot_get", &off_hot_get) < 0 ||
        slot_offset(cls, "_hot_mte", &off_hot_mte) < 0 || slot_offset(cls, "_hits", &off_hits) < 0 ||
        slot_offset(cls, "_misses", &off_misses) < 0)
        return NULL;
    Conf *c = counts_hits ? &conf_tinylfu : &conf_lru;
    PyMethodDef *def = counts_hits ? &tinylfu_def : &lru_def;
    Py_XSETREF(c->py_get, Py_NewRef(py_get));
    c->counts_hits = counts_hits;
    c->miss_is_final = miss_is_final;
    PyObject *descr = PyDescr_NewMethod((PyTypeObject *)cls, def);
    if (descr == NULL) return NULL;
    int rc = PyObject_SetAttrString(cls, "get", descr);
    Py_DECREF(descr);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install", install, METH_VARARGS,
     "install(cls, py_get, counts_hits, miss_is_final, globals): put the C get on cls (one of fastpaths.py's classes)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_fastget", "SharedPromptCache.get's lock-free hit in C.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__fastget(void) { return PyModule_Create(&moddef); }
