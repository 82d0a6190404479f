/* memdiag.cache._fastget: SharedPromptCache.get's lock-free hit, and LRU's set, in C.
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
#define ENTRY_OVERHEAD 272 /* sizing.ENTRY_OVERHEAD, checked at install */

/* Slot offsets of SharedPromptCache, read from its member descriptors at install(). */
static Py_ssize_t off_pending = -1, off_hot_get, off_hot_mte, off_hits, off_misses;
/* for LRU's set */
static Py_ssize_t off_lock, off_inflight, off_limit, off_max_entries, off_count, off_bytes, off_updates, off_evicted,
    off_ttl, off_policy;
static PyObject *lru_py_set, *s_sizeof, *s_acquire, *s_release, *s_popitem, *s_mte, *f_zero, *i_zero;

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

/* Call a Python method function with self prepended to a vectorcall argument array. */
static PyObject *call_py(PyObject *fn, PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[8], **stack = small;
    if (total + 1 > 8 && (stack = PyMem_Malloc((total + 1) * sizeof(PyObject *))) == NULL) return PyErr_NoMemory();
    stack[0] = self;
    for (Py_ssize_t i = 0; i < total; i++) stack[i + 1] = args[i];
    PyObject *r = PyObject_Vectorcall(fn, stack, nargs + 1, kwnames);
    if (stack != small) PyMem_Free(stack);
    return r;
}

/* fast_get only serves calls without keywords (the callers below pass those on directly). */
#define slow(c, self, args, nargs) call_py((c)->py_get, self, args, nargs, NULL)

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

static PyObject *lru_get(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (kwnames != NULL) return call_py(conf_lru.py_get, self, args, PyVectorcall_NARGS(nargsf), kwnames);
    return fast_get(&conf_lru, self, args, PyVectorcall_NARGS(nargsf));
}

static PyObject *tinylfu_get(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (kwnames != NULL) return call_py(conf_tinylfu.py_get, self, args, PyVectorcall_NARGS(nargsf), kwnames);
    return fast_get(&conf_tinylfu, self, args, PyVectorcall_NARGS(nargsf));
}


/* LRU's set for a str key and a str/bytes value, no ttl anywhere, the lock free to take:
 * fastpaths._LRUCache.set's inlined path (kept in step with it), else that Python set. */
#define lru_set_slow(self, args, nargs) call_py(lru_py_set, self, args, nargs, NULL)

static Py_ssize_t slot_ssize(PyObject *self, Py_ssize_t off) {
    PyObject *o = SLOT(self, off);
    if (o == NULL || !PyLong_CheckExact(o)) {
        PyErr_SetString(PyExc_TypeError, "memdiag cache: slot is not an int");
        return -1;
    }
    return PyLong_AsSsize_t(o);
}

static int set_slot_ssize(PyObject *self, Py_ssize_t off, Py_ssize_t v) {
    PyObject *n = PyLong_FromSsize_t(v);
    if (n == NULL) return -1;
    PyObject *old = SLOT(self, off);
    SLOT(self, off) = n;
    Py_XDECREF(old);
    return 0;
}

static Py_ssize_t sizeof_of(PyObject *o) {
    PyObject *r = PyObject_CallMethodNoArgs(o, s_sizeof);
    if (r == NULL) return -1;
    Py_ssize_t v = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    return v;
}

/* Under the lock: store, evict; -1 with an exception, 0 done, 1 the Python set must do it. */
static int lru_store(PyObject *self, PyObject *key, PyObject *entry, Py_ssize_t size) {
    PyObject *pending = SLOT(self, off_pending), *inflight = SLOT(self, off_inflight);
    if (pending == NULL || !PyList_CheckExact(pending) || PyList_GET_SIZE(pending)) return 1;
    if (inflight == NULL || !PyDict_CheckExact(inflight) || PyDict_GET_SIZE(inflight)) return 1;
    Py_ssize_t limit = slot_ssize(self, off_limit);
    if (limit == -1 && PyErr_Occurred()) return -1;
    if (size > limit) return 1;
    PyObject *hot_get = SLOT(self, off_hot_get);
    if (hot_get == NULL || !PyCFunction_Check(hot_get)) return 1;
    PyObject *od = PyCFunction_GET_SELF(hot_get);
    if (od == NULL || !PyDict_Check(od)) return 1;
    Py_ssize_t n = slot_ssize(self, off_count), b = slot_ssize(self, off_bytes);
    Py_ssize_t max_entries = slot_ssize(self, off_max_entries);
    if (PyErr_Occurred()) return -1;
    PyObject *old = PyDict_GetItemWithError(od, key);
    if (old == NULL && PyErr_Occurred()) return -1;
    if (old == NULL) {
        if (PyObject_SetItem(od, key, entry) < 0) return -1; /* OrderedDict: appended */
        n += 1;
        b += size;
    } else {
        if (!PyTuple_CheckExact(old) || PyTuple_GET_SIZE(old) < 2) return 1;
        Py_ssize_t osize = PyLong_AsSsize_t(PyTuple_GET_ITEM(old, 1));
        if (osize == -1 && PyErr_Occurred()) return -1;
        if (PyObject_SetItem(od, key, entry) < 0) return -1;
        PyObject *r = PyObject_CallMethodOneArg(od, s_mte, key);
        if (r == NULL) return -1;
        Py_DECREF(r);
        if (incr_slot(&SLOT(self, off_updates)) < 0) return -1;
        b += size - osize;
    }
    Py_ssize_t evicted = 0;
    while ((b > limit || n > max_entries) && PyDict_GET_SIZE(od)) {
        PyObject *kv = PyObject_CallMethodOneArg(od, s_popitem, Py_False);
        if (kv == NULL) return -1;
        PyObject *e = PyTuple_GET_ITEM(kv, 1);
        Py_ssize_t es = (PyTuple_Check(e) || PyList_Check(e)) ? PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(e, 1)) : -1;
        Py_DECREF(kv); /* the evicted value is freed here, under the lock, as in Python */
        if (es == -1 && PyErr_Occurred()) return -1;
        b -= es;
        n -= 1;
        evicted += 1;
    }
    if (evicted) {
        Py_ssize_t ev = slot_ssize(self, off_evicted);
        if ((ev == -1 && PyErr_Occurred()) || set_slot_ssize(self, off_evicted, ev + evicted) < 0) return -1;
    }
    if (set_slot_ssize(self, off_count, n) < 0 || set_slot_ssize(self, off_bytes, b) < 0) return -1;
    return 0;
}

static PyObject *lru_set(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL) return call_py(lru_py_set, self, args, nargs, kwnames);
    if (nargs < 2 || nargs > 3 || (nargs == 3 && args[2] != Py_None)) return lru_set_slow(self, args, nargs);
    PyObject *key = args[0], *value = args[1];
    if (!PyUnicode_CheckExact(key) || !(PyUnicode_CheckExact(value) || PyBytes_CheckExact(value)) ||
        SLOT(self, off_ttl) != Py_None)
        return lru_set_slow(self, args, nargs);
    Py_ssize_t vs = sizeof_of(value), ks = sizeof_of(key);
    if (vs < 0 || ks < 0) return NULL;
    Py_ssize_t size = vs + ks + ENTRY_OVERHEAD;
    PyObject *entry = PyTuple_New(6);
    if (entry == NULL) return NULL;
    PyObject *psize = PyLong_FromSsize_t(size);
    if (psize == NULL) {
        Py_DECREF(entry);
        return NULL;
    }
    PyTuple_SET_ITEM(entry, 0, Py_NewRef(value));
    PyTuple_SET_ITEM(entry, 1, psize);
    PyTuple_SET_ITEM(entry, 2, Py_NewRef(f_zero));
    PyTuple_SET_ITEM(entry, 3, Py_NewRef(i_zero));
    PyTuple_SET_ITEM(entry, 4, Py_NewRef(i_zero));
    PyTuple_SET_ITEM(entry, 5, Py_NewRef(i_zero));
    PyObject *lock = SLOT(self, off_lock);
    PyObject *got = lock ? PyObject_CallMethodOneArg(lock, s_acquire, Py_False) : NULL;
    if (got == NULL) {
        Py_DECREF(entry);
        return NULL;
    }
    int held = got == Py_True;
    Py_DECREF(got);
    if (!held) { /* taken: the Python set waits, or queues a re-entrant write */
        Py_DECREF(entry);
        return lru_set_slow(self, args, nargs);
    }
    /* No collection inside the locked section: popitem allocates a tuple, a collection there
     * could run a finalizer that calls this cache, and a C frame is not one the re-entrancy
     * check (core._acquire) can see. The GIL is held throughout, so nothing else sees it off. */
    int gc_was = PyGC_Disable();
    int rc = lru_store(self, key, entry, size);
    Py_DECREF(entry);
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    PyObject *r = PyObject_CallMethodNoArgs(lock, s_release);
    Py_XDECREF(r);
    if (gc_was) PyGC_Enable();
    if (exc_type != NULL) {
        PyErr_Clear(); /* a failed release, if any: the first error wins */
        PyErr_Restore(exc_type, exc_value, exc_tb);
        return NULL;
    }
    if (r == NULL) return NULL;
    if (rc == 1) return lru_set_slow(self, args, nargs);
    Py_RETURN_TRUE;
}

#define SET_DOC "set(key, value, ttl=None)\n--\n\nStore value under key (C fast path for str/bytes, LRU)."
static PyMethodDef lru_set_def = {"set", (PyCFunction)(void (*)(void))lru_set, METH_FASTCALL | METH_KEYWORDS,
                                  SET_DOC};

#define GET_DOC "get(key, default=None)\n--\n\nReturn the value cached under key, or default (C fast path)."
static PyMethodDef lru_def = {"get", (PyCFunction)(void (*)(void))lru_get, METH_FASTCALL | METH_KEYWORDS, GET_DOC};
static PyMethodDef tinylfu_def = {"get", (PyCFunction)(void (*)(void))tinylfu_get, METH_FASTCALL | METH_KEYWORDS,
                                  GET_DOC};

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


static PyObject *install_lru_set(PyObject *mod, PyObject *args) {
    PyObject *cls, *py_set;
    Py_ssize_t overhead;
    if (!PyArg_ParseTuple(args, "O!On", &PyType_Type, &cls, &py_set, &overhead)) return NULL;
    if (overhead != ENTRY_OVERHEAD) {
        PyErr_SetString(PyExc_ValueError, "ENTRY_OVERHEAD differs from the C build's");
        return NULL;
    }
    if (slot_offset(cls, "_lock", &off_lock) < 0 || slot_offset(cls, "_inflight", &off_inflight) < 0 ||
        slot_offset(cls, "_limit", &off_limit) < 0 || slot_offset(cls, "_max_entries", &off_max_entries) < 0 ||
        slot_offset(cls, "_count", &off_count) < 0 || slot_offset(cls, "_bytes", &off_bytes) < 0 ||
        slot_offset(cls, "_updates", &off_updates) < 0 || slot_offset(cls, "_evicted_size", &off_evicted) < 0 ||
        slot_offset(cls, "ttl", &off_ttl) < 0 || slot_offset(cls, "_policy", &off_policy) < 0 ||
        slot_offset(cls, "_pending", &off_pending) < 0 || slot_offset(cls, "_hot_get", &off_hot_get) < 0)
        return NULL;
    if (s_sizeof == NULL) {
        s_sizeof = PyUnicode_InternFromString("__sizeof__");
        s_acquire = PyUnicode_InternFromString("acquire");
        s_release = PyUnicode_InternFromString("release");
        s_popitem = PyUnicode_InternFromString("popitem");
        s_mte = PyUnicode_InternFromString("move_to_end");
        f_zero = PyFloat_FromDouble(0.0);
        i_zero = PyLong_FromLong(0);
        if (!s_sizeof || !s_acquire || !s_release || !s_popitem || !s_mte || !f_zero || !i_zero) return NULL;
    }
    Py_XSETREF(lru_py_set, Py_NewRef(py_set));
    PyObject *descr = PyDescr_NewMethod((PyTypeObject *)cls, &lru_set_def);
    if (descr == NULL) return NULL;
    int rc = PyObject_SetAttrString(cls, "set", descr);
    Py_DECREF(descr);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install_lru_set", install_lru_set, METH_VARARGS,
     "install_lru_set(cls, py_set, entry_overhead): put the C set on fastpaths._LRUCache."},
    {"install", install, METH_VARARGS,
     "install(cls, py_get, counts_hits, miss_is_final, globals): put the C get on cls (one of fastpaths.py's classes)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_fastget", "SharedPromptCache.get's lock-free hit in C.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__fastget(void) { return PyModule_Create(&moddef); }
