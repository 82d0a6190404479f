/* memdiag.cache._fastget: SharedPromptCache's get and set for the built-in policies, in C.
 *
 * Optional (fastpaths.py falls back to its pure-Python methods when this does not build or
 * load). install(cls, py_get, counts_hits, miss_is_final) puts a method descriptor named
 * "get" on one of fastpaths.py's classes; install_lru_set and install_tinylfu put "set" (and,
 * for TinyLFU, the part of a miss the Python get does under the lock: see the TinyLFU
 * section below). Those run in an exclusive_section(), which does not take the lock. The get's
 * lock-free part does exactly what the Python get's does, and hands every case it does not
 * serve to py_get (the Python get, which looks again):
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
 * stronger). It holds no memory of its own beyond this module's few static words (and the
 * last key an LRU get missed: see absent_note): no per-cache or per-entry state.
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
static PyObject *lru_py_set, *s_sizeof, *f_zero, *i_zero;
/* _thread.lock and its `locked` method, OrderedDict's popitem and move_to_end: method
 * descriptors called directly (no attribute lookup per call). */
static PyTypeObject *lock_type;
static PyObject *lock_locked, *od_popitem, *od_mte;

typedef struct {
    PyObject *py_get; /* the Python get: every case this path does not answer */
    int counts_hits;  /* TinyLFU: e[FREQ] += 1 */
    int miss_is_final;
    int cold; /* TinyLFU with install_tinylfu() done: the locked miss path is C too */
} Conf;

static Conf conf_lru, conf_tinylfu;
static PyObject *globals, *clock_name; /* fastpaths.py's globals, "_monotonic" */

static PyObject *tl_get_cold(Conf *c, PyObject *self, PyObject *const *args, Py_ssize_t nargs);

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

/* LRU's read-through hint: the key the last lock-free get() missed, the table it missed in
 * and that table's version then. While the table's version is unchanged nothing has been
 * stored in it or removed from it (CPython bumps a dict's version on every such change, and
 * versions are never reused, even by another dict at the same address), so the set() that
 * follows the miss skips looking for the key again. A strong reference, so that another str
 * cannot take the key's address; one str, released by the next miss. CPython >= 3.12
 * deprecates the version tag: there the hint is off and set() always looks. */
#if PY_VERSION_HEX < 0x030C0000
static PyObject *absent_key, *absent_table;
static uint64_t absent_version;

static void absent_note(PyObject *table, PyObject *key) {
    PyObject *old = absent_key;
    absent_key = Py_NewRef(key);
    absent_table = table; /* compared, never dereferenced */
    absent_version = ((PyDictObject *)table)->ma_version_tag;
    Py_XDECREF(old); /* a str: no finalizer */
}

static int absent_still(PyObject *table, PyObject *key) {
    return key == absent_key && table == absent_table && ((PyDictObject *)table)->ma_version_tag == absent_version;
}
#else
#define absent_note(table, key) ((void)0)
#define absent_still(table, key) 0
#endif

/* An exact-int slot as a Py_ssize_t: 0; 1 (no exception) if missing, not an exact int, or out of range. */
static int get_ssize(PyObject *o, Py_ssize_t off, Py_ssize_t *out) {
    PyObject *v = SLOT(o, off);
    if (v == NULL || !PyLong_CheckExact(v)) return 1;
    Py_ssize_t x = PyLong_AsSsize_t(v); /* a switch for one-digit ints: cheap */
    if (x == -1 && PyErr_Occurred()) {
        PyErr_Clear(); /* OverflowError */
        return 1;
    }
    *out = x;
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
        if (!c->miss_is_final) return c->cold ? tl_get_cold(c, self, args, nargs) : slow(c, self, args, nargs);
        if (incr_slot(&SLOT(self, off_misses)) < 0) {
            PyErr_Clear();
            return slow(c, self, args, nargs);
        }
        if (PyODict_CheckExact(table)) absent_note(table, key);
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


/* LRU's set for a str key and a str/bytes value, no ttl anywhere, the lock free:
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

/* str.__sizeof__ and bytes.__sizeof__ (method descriptors), called directly: no attribute lookup. */
static PyObject *str_sizeof, *bytes_sizeof;

/* x.__sizeof__() of an exact str or bytes: what sys.getsizeof returns for these untracked types. */
static Py_ssize_t sizeof_of(PyObject *o) {
    /* The common cases computed as their __sizeof__ does (Objects/unicodeobject.c,
     * bytesobject.c): bytes, and a compact ASCII str with no wchar_t copy (its UTF-8 is its
     * data). Anything else asks the method. */
    if (PyBytes_CheckExact(o)) return Py_TYPE(o)->tp_basicsize + Py_SIZE(o);
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_IS_READY(o) && PyUnicode_IS_COMPACT_ASCII(o) && ((PyASCIIObject *)o)->wstr == NULL)
        return (Py_ssize_t)sizeof(PyASCIIObject) + PyUnicode_GET_LENGTH(o) + 1;
#else
    if (PyUnicode_IS_COMPACT_ASCII(o)) return (Py_ssize_t)sizeof(PyASCIIObject) + PyUnicode_GET_LENGTH(o) + 1;
#endif
    PyObject *r = PyObject_CallOneArg(PyUnicode_CheckExact(o) ? str_sizeof : bytes_sizeof, o);
    if (r == NULL) return -1;
    Py_ssize_t v = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    return v;
}

/* Run fn(self, arg) as one step that no other thread can see half done, without taking
 * the cache lock: what the lock would give it is already true here.
 *
 * The cache's Python sections hold self._lock. This one starts only when that lock is
 * free: no Python section is under way (a re-entrant call, made from inside one, sees it
 * held and goes to the Python method, which queues it). Then fn holds the GIL throughout
 * and never releases it, runs no Python code (exact str keys: hashing and comparing them
 * is C; the values it frees are str, bytes, numbers or pickles, which have no finalizer),
 * and the garbage collector is off (a collection could run a finalizer that calls the
 * cache). So no other thread runs, and none can start a section, until fn returns. A
 * thread blocked in acquire() that is granted the lock meanwhile is still waiting for the
 * GIL: its section starts after this one ends, and reads what fn left.
 *
 * Not taking the lock is the point: CPython 3.11's lock.acquire(False) parses its
 * arguments and reads the monotonic clock even when it does not wait, which with the
 * release was a large part of a read-through miss (bench_cache.py, the loop trace).
 *
 * 1: the lock is held (fn not run); else fn's result: 0 done, 1 the Python method must do
 * it, -1 error. */
static int exclusive_section(PyObject *self, int (*fn)(PyObject *, void *), void *arg) {
    PyObject *lock = SLOT(self, off_lock);
    if (lock == NULL || Py_TYPE(lock) != lock_type) return 1;
    PyObject *held = PyObject_Vectorcall(lock_locked, &lock, 1, NULL);
    if (held == NULL) return -1;
    Py_DECREF(held);
    if (held != Py_False) return 1;
    int gc_was = PyGC_Disable();
    int rc = fn(self, arg);
    if (gc_was) PyGC_Enable();
    return rc < 0 ? -1 : rc;
}

typedef struct {
    PyObject *key, *entry;
    Py_ssize_t size;
} StoreArgs;

/* In the exclusive section: store, evict; -1 with an exception, 0 done, 1 the Python set must do it. */
static int lru_store_fn(PyObject *self, void *arg) {
    StoreArgs *a = arg;
    PyObject *key = a->key, *entry = a->entry;
    Py_ssize_t size = a->size;
    PyObject *pending = SLOT(self, off_pending), *inflight = SLOT(self, off_inflight);
    if (pending == NULL || !PyList_CheckExact(pending) || PyList_GET_SIZE(pending)) return 1;
    if (inflight == NULL || !PyDict_CheckExact(inflight) || PyDict_GET_SIZE(inflight)) return 1;
    Py_ssize_t limit, n, b, max_entries; /* ints beyond a Py_ssize_t: the Python set */
    if (get_ssize(self, off_limit, &limit) || get_ssize(self, off_count, &n) || get_ssize(self, off_bytes, &b) ||
        get_ssize(self, off_max_entries, &max_entries))
        return 1;
    if (size > limit || b < 0 || n < 0 || b > PY_SSIZE_T_MAX - size || n == PY_SSIZE_T_MAX) return 1;
    PyObject *hot_get = SLOT(self, off_hot_get);
    if (hot_get == NULL || !PyCFunction_Check(hot_get)) return 1;
    PyObject *od = PyCFunction_GET_SELF(hot_get);
    if (od == NULL || !PyODict_CheckExact(od)) return 1;
    Py_ssize_t n0 = n; /* a full cache evicts one per insertion: the count stays */
    PyObject *old = NULL;
    if (!absent_still(od, key)) { /* else get() just missed it and nothing was stored since */
        old = PyDict_GetItemWithError(od, key);
        if (old == NULL && PyErr_Occurred()) return -1;
    }
    if (old == NULL) {
        if (PyObject_SetItem(od, key, entry) < 0) return -1; /* OrderedDict: appended */
        n += 1;
        b += size;
    } else {
        if (!PyTuple_CheckExact(old) || PyTuple_GET_SIZE(old) < 2) return 1;
        Py_ssize_t osize = PyLong_AsSsize_t(PyTuple_GET_ITEM(old, 1));
        if (osize == -1 && PyErr_Occurred()) return -1;
        if (PyObject_SetItem(od, key, entry) < 0) return -1;
        PyObject *mte_args[2] = {od, key};
        PyObject *r = PyObject_Vectorcall(od_mte, mte_args, 2, NULL);
        if (r == NULL) return -1;
        Py_DECREF(r);
        if (incr_slot(&SLOT(self, off_updates)) < 0) return -1;
        b += size - osize;
    }
    Py_ssize_t evicted = 0;
    PyObject *pop_args[2] = {od, Py_False}; /* popitem(last=False): the least recent */
    while ((b > limit || n > max_entries) && PyDict_GET_SIZE(od)) {
        PyObject *kv = PyObject_Vectorcall(od_popitem, pop_args, 2, NULL);
        if (kv == NULL) return -1;
        PyObject *e = PyTuple_GET_ITEM(kv, 1);
        Py_ssize_t es = (PyTuple_Check(e) || PyList_Check(e)) ? PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(e, 1)) : -1;
        Py_DECREF(kv); /* the evicted value is freed here, in the section, as in Python under the lock */
        if (es == -1 && PyErr_Occurred()) return -1;
        b -= es;
        n -= 1;
        evicted += 1;
    }
    if (evicted) {
        Py_ssize_t ev = slot_ssize(self, off_evicted);
        if ((ev == -1 && PyErr_Occurred()) || set_slot_ssize(self, off_evicted, ev + evicted) < 0) return -1;
    }
    if ((n != n0 && set_slot_ssize(self, off_count, n) < 0) || set_slot_ssize(self, off_bytes, b) < 0) return -1;
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
    int rc = exclusive_section(self, lru_store_fn, &(StoreArgs){key, entry, size});
    Py_DECREF(entry);
    if (rc < 0) return NULL;
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


/* ---- TinyLFU: the lock's part of a miss in get, and set, in C -------------------------
 *
 * fastpaths._TinyLFUCache's Python get and set, kept in step with them (a test drives one
 * stream through both and compares every decision): the miss of the hot table (protected)
 * looks in probation and the window, promoting a hit to protected; set of a
 * new str key with a str/bytes value (no per-call ttl) inserts it into the window, counts
 * it in the doorkeeper or the count-min sketch, and evicts down to the bounds with
 * TinyLFUPolicy.victim's admission contest. They read and write the policy's own tables
 * and sketch rows (TinyLFUPolicy's slots): no structure of their own, no per-cache or
 * per-entry memory, so the budget (bytes + policy_bytes) is exactly the Python path's.
 *
 * Every case they do not serve goes, before anything has changed, to the Python method:
 * the lock taken (another thread's Python section, or a re-entrant call), queued writes,
 * loads in flight, an update of a cached key, an entry that is serialised or expiring
 * (get), a value charged more than the budget, an aging or sketch growth due (both run
 * Python code: TinyLFUPolicy._age, _set_capacity), an unwatched TTL cache, any slot that
 * is not what the Python code puts there (an int beyond Py_ssize_t, say).
 *
 * Consistency: both run in an exclusive_section() (above): one atomic step for every other
 * thread, as the lock-free hit is, and as the Python sections are under the lock.
 */
static PyTypeObject *tl_policy_type;
static PyObject *tl_py_set;
static Py_ssize_t off_absent = -1, off_watched;
static Py_ssize_t p_win, p_prob, p_prot, p_rows, p_door, p_mask, p_dmask, p_s1, p_s2, p_s3, p_cmax, p_ticks, p_sample,
    p_grow_at, p_win_max, p_main_max, p_prot_max;

typedef struct {
    PyObject *pol, *win, *prob, *prot; /* borrowed */
    unsigned char *row[4], *door;
    Py_ssize_t mask, dmask, s1, s2, s3, cmax, win_max, main_max, prot_max;
} TL;

#define LEN(od) PyDict_GET_SIZE(od)

static int is_od(PyObject *o) { return o != NULL && PyODict_CheckExact(o); }

static int tl_row(PyObject *r, Py_ssize_t mask, unsigned char **out) {
    if (!PyByteArray_CheckExact(r) || PyByteArray_GET_SIZE(r) <= mask) return 1;
    *out = (unsigned char *)PyByteArray_AS_STRING(r);
    return 0;
}

/* The cache's TinyLFUPolicy, its tables and sketch: 0; 1 if anything is not as the Python code leaves it. */
static int tl_load(PyObject *self, TL *t) {
    PyObject *pol = SLOT(self, off_policy);
    if (pol == NULL || Py_TYPE(pol) != tl_policy_type) return 1;
    t->pol = pol;
    t->win = SLOT(pol, p_win);
    t->prob = SLOT(pol, p_prob);
    t->prot = SLOT(pol, p_prot);
    if (!is_od(t->win) || !is_od(t->prob) || !is_od(t->prot)) return 1;
    if (get_ssize(pol, p_mask, &t->mask) || get_ssize(pol, p_dmask, &t->dmask) || get_ssize(pol, p_s1, &t->s1) ||
        get_ssize(pol, p_s2, &t->s2) || get_ssize(pol, p_s3, &t->s3) || get_ssize(pol, p_cmax, &t->cmax) ||
        get_ssize(pol, p_win_max, &t->win_max) || get_ssize(pol, p_main_max, &t->main_max) ||
        get_ssize(pol, p_prot_max, &t->prot_max))
        return 1;
    if (t->mask < 0 || t->dmask < 0 || t->cmax < 1 || t->cmax > 255) return 1;
    if (t->s1 < 0 || t->s1 > 63 || t->s2 < 0 || t->s2 > 63 || t->s3 < 0 || t->s3 > 63) return 1;
    PyObject *rows = SLOT(pol, p_rows), *door = SLOT(pol, p_door);
    if (rows == NULL || !PyTuple_CheckExact(rows) || PyTuple_GET_SIZE(rows) != 4 || door == NULL) return 1;
    for (int i = 0; i < 4; i++)
        if (tl_row(PyTuple_GET_ITEM(rows, i), t->mask, &t->row[i])) return 1;
    return tl_row(door, t->dmask, &t->door);
}

/* (h >> s) & m as Python computes it for any int h (arithmetic shift: floor). */
static inline Py_ssize_t ix(Py_hash_t h, Py_ssize_t s, Py_ssize_t m) { return (Py_ssize_t)((h >> s) & m); }

/* The four cells of h and their least value. */
static Py_ssize_t tl_cells(TL *t, Py_hash_t h, unsigned char **c) {
    c[0] = t->row[0] + ix(h, 0, t->mask);
    c[1] = t->row[1] + ix(h, t->s1, t->mask);
    c[2] = t->row[2] + ix(h, t->s2, t->mask);
    c[3] = t->row[3] + ix(h, t->s3, t->mask);
    Py_ssize_t low = *c[0];
    for (int i = 1; i < 4; i++)
        if (*c[i] < low) low = *c[i];
    return low;
}

/* TinyLFUPolicy._add: count `by` more accesses (conservative update, saturating). */
static void tl_add(TL *t, Py_hash_t h, Py_ssize_t by) {
    unsigned char *c[4];
    Py_ssize_t low = tl_cells(t, h, c);
    Py_ssize_t nw = by >= t->cmax ? t->cmax : low + by;
    if (nw > t->cmax) nw = t->cmax;
    for (int i = 0; i < 4; i++)
        if (*c[i] < nw) *c[i] = (unsigned char)nw;
}

/* TinyLFUPolicy._record (as inlined in the Python set): the new key's estimate; the
 * doorkeeper and the sketch count it if `apply` (else nothing changes). */
static Py_ssize_t tl_record(TL *t, Py_hash_t h, int apply) {
    unsigned char *d = t->door + ix(h, 0, t->dmask);
    if (!*d) {
        if (apply) *d = 1;
        return 1;
    }
    unsigned char *c[4];
    Py_ssize_t low = tl_cells(t, h, c);
    if (low < t->cmax) {
        low += 1;
        if (apply)
            for (int i = 0; i < 4; i++)
                if (*c[i] < low) *c[i] = (unsigned char)low;
    }
    return low + 1;
}

/* An entry's int slot (FREQ, AUX, SIZE), saturated far below overflow; -1 with an exception if not an entry. */
static Py_ssize_t entry_int(PyObject *e, int i) {
    if (!PyList_CheckExact(e) || PyList_GET_SIZE(e) < 6 || !PyLong_CheckExact(PyList_GET_ITEM(e, i))) {
        PyErr_SetString(PyExc_SystemError, "memdiag cache: malformed TinyLFU entry");
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(PyList_GET_ITEM(e, i), &overflow);
    if (overflow) return overflow > 0 ? PY_SSIZE_T_MAX / 4 : 0;
    if (v < 0) return 0;
    return v > PY_SSIZE_T_MAX / 4 ? PY_SSIZE_T_MAX / 4 : (Py_ssize_t)v;
}

/* The first key of a non-empty OrderedDict (new reference), NULL with an exception otherwise. */
static PyObject *od_first(PyObject *od) {
    PyObject *it = PyObject_GetIter(od);
    if (it == NULL) return NULL;
    PyObject *k = PyIter_Next(it);
    Py_DECREF(it);
    if (k == NULL && !PyErr_Occurred()) PyErr_SetString(PyExc_SystemError, "memdiag cache: empty table");
    return k;
}

/* Remove key from od and return its value (new reference). */
static PyObject *od_take(PyObject *od, PyObject *key) {
    PyObject *v = PyDict_GetItemWithError(od, key);
    if (v == NULL) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    Py_INCREF(v);
    if (PyObject_DelItem(od, key) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

/* Move od's oldest item to the end of dst. */
static int od_move_first(PyObject *od, PyObject *dst) {
    PyObject *k = od_first(od);
    if (k == NULL) return -1;
    PyObject *v = od_take(od, k);
    int rc = v == NULL ? -1 : PyObject_SetItem(dst, k, v);
    Py_XDECREF(v);
    Py_DECREF(k);
    return rc;
}

/* TinyLFUPolicy.victim: remove the entry to give up next; it, as a new reference (key in *kout). */
static PyObject *tl_victim(TL *t, PyObject **kout) {
    PyObject *win = t->win, *prob = t->prob, *prot = t->prot, *from, *k;
    if (LEN(win) > t->win_max) {
        /* Main area not full yet: the window's overflow moves in without a contest. */
        while (LEN(win) > t->win_max && LEN(prob) + LEN(prot) < t->main_max)
            if (od_move_first(win, prob) < 0) return NULL;
        if (LEN(win) > t->win_max && (LEN(prob) || LEN(prot))) {
            PyObject *main = LEN(prob) ? prob : prot;
            PyObject *ck = od_first(win);
            if (ck == NULL) return NULL;
            PyObject *vk = od_first(main);
            if (vk == NULL) {
                Py_DECREF(ck);
                return NULL;
            }
            PyObject *ce = PyDict_GetItemWithError(win, ck), *ve = PyDict_GetItemWithError(main, vk);
            Py_ssize_t cf = -1, vf = -1;
            if (ce != NULL && ve != NULL) {
                Py_ssize_t c4 = entry_int(ce, 4), c5 = entry_int(ce, 5), v4 = entry_int(ve, 4), v5 = entry_int(ve, 5);
                if (!PyErr_Occurred()) cf = c4 + c5, vf = v4 + v5;
            } else if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_SystemError, "memdiag cache: table changed");
            }
            if (cf < 0) {
                Py_DECREF(ck);
                Py_DECREF(vk);
                return NULL;
            }
            if (cf > vf && vf < t->cmax) { /* the candidate is admitted; probation's oldest goes */
                PyObject *e = od_take(win, ck);
                int rc = e == NULL ? -1 : PyObject_SetItem(prob, ck, e);
                Py_XDECREF(e);
                Py_DECREF(ck);
                if (rc < 0) {
                    Py_DECREF(vk);
                    return NULL;
                }
                k = vk;
                from = main;
            } else {
                Py_DECREF(vk);
                k = ck;
                from = win;
            }
            goto take;
        }
    }
    from = LEN(prob) ? prob : LEN(prot) ? prot : win;
    k = od_first(from);
    if (k == NULL) return NULL;
take:;
    PyObject *e = od_take(from, k);
    if (e == NULL) {
        Py_DECREF(k);
        return NULL;
    }
    Py_ssize_t f = entry_int(e, 4);
    if (f < 0) {
        Py_DECREF(e);
        Py_DECREF(k);
        return NULL;
    }
    if (f) { /* leaving entries fold their hits back into the sketch */
        Py_hash_t h = PyObject_Hash(k);
        if (h == -1) {
            Py_DECREF(e);
            Py_DECREF(k);
            return NULL;
        }
        tl_add(t, h, f);
    }
    *kout = k;
    return e;
}

/* `drop`: the hint's old value, released by the caller once the section has ended (the
 * Python get may have left any object there, and its finaliser must not run in the section). */
typedef struct {
    PyObject *key, *dflt, *result, *drop;
} ColdArgs;

/* In the exclusive section: TinyLFUPolicy.lookup_cold as the Python get inlines it. */
static int tl_cold_locked(PyObject *self, void *arg) {
    ColdArgs *a = arg;
    PyObject *pending = SLOT(self, off_pending);
    if (pending == NULL || !PyList_CheckExact(pending) || PyList_GET_SIZE(pending)) return 1;
    TL t;
    if (tl_load(self, &t)) return 1;
    PyObject *key = a->key, *from = t.prob;
    PyObject *e = PyDict_GetItemWithError(t.prob, key);
    if (e == NULL && !PyErr_Occurred()) {
        from = t.win;
        e = PyDict_GetItemWithError(t.win, key);
    }
    if (e == NULL) {
        if (PyErr_Occurred()) return -1;
        if (incr_slot(&SLOT(self, off_misses)) < 0) return -1;
        a->drop = SLOT(self, off_absent); /* the hint for the set that follows */
        SLOT(self, off_absent) = Py_NewRef(key);
        a->result = Py_NewRef(a->dflt);
        return 0;
    }
    if (!PyList_CheckExact(e) || PyList_GET_SIZE(e) < 6) return 1;
    PyObject *flags = PyList_GET_ITEM(e, FLAGS);
    if (!PyLong_CheckExact(flags) || _PyLong_Sign(flags) != 0) return 1; /* expiring/serialised: Python */
    e = od_take(from, key); /* a hit in probation or the window: promoted to protected */
    if (e == NULL) return -1;
    int rc = incr_slot(&((PyListObject *)e)->ob_item[FREQ]);
    if (rc == 0) rc = PyObject_SetItem(t.prot, key, e);
    if (rc == 0 && LEN(t.prot) > t.prot_max) rc = od_move_first(t.prot, t.prob);
    if (rc == 0) rc = incr_slot(&SLOT(self, off_hits));
    if (rc == 0) a->result = Py_NewRef(PyList_GET_ITEM(e, VALUE));
    Py_DECREF(e);
    return rc < 0 ? -1 : 0;
}

static PyObject *tl_get_cold(Conf *c, PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    ColdArgs a = {args[0], nargs > 1 ? args[1] : Py_None, NULL, NULL};
    int rc = exclusive_section(self, tl_cold_locked, &a);
    Py_XDECREF(a.drop);
    if (rc == 0 && a.result != NULL) return a.result;
    Py_XDECREF(a.result);
    if (rc < 0) return NULL;
    return slow(c, self, args, nargs);
}

typedef struct {
    PyObject *key, *entry, *drop; /* drop: as in ColdArgs */
    Py_ssize_t size;
} SetArgs;

/* In the exclusive section: a new key into the window, counted, then evictions to the bounds. */
static int tl_store(PyObject *self, void *arg) {
    SetArgs *a = arg;
    PyObject *key = a->key, *pending = SLOT(self, off_pending), *inflight = SLOT(self, off_inflight);
    if (pending == NULL || !PyList_CheckExact(pending) || PyList_GET_SIZE(pending)) return 1;
    if (inflight == NULL || !PyDict_CheckExact(inflight) || PyDict_GET_SIZE(inflight)) return 1;
    Py_ssize_t limit, max_entries, n, b, ticks, sample, grow_at;
    if (get_ssize(self, off_limit, &limit) || get_ssize(self, off_max_entries, &max_entries) ||
        get_ssize(self, off_count, &n) || get_ssize(self, off_bytes, &b))
        return 1;
    if (a->size > limit || b < 0 || n < 0 || b > PY_SSIZE_T_MAX - a->size || n == PY_SSIZE_T_MAX) return 1;
    TL t;
    if (tl_load(self, &t)) return 1;
    if (get_ssize(t.pol, p_ticks, &ticks) || get_ssize(t.pol, p_sample, &sample) ||
        get_ssize(t.pol, p_grow_at, &grow_at))
        return 1;
    if (ticks >= sample - 1 || n >= grow_at) return 1; /* aging or growing the sketch: Python code */
    if (SLOT(self, off_absent) != key) {                /* else get() just missed it: in no table */
        int r;
        if ((r = PyDict_Contains(t.prot, key)) || (r = PyDict_Contains(t.prob, key)) ||
            (r = PyDict_Contains(t.win, key)))
            return r < 0 ? -1 : 1; /* an update of a cached key: Python */
    }
    Py_hash_t h = PyObject_Hash(key);
    if (h == -1) return -1;
    /* Allocated before anything changes: */
    PyObject *est = PyLong_FromSsize_t(tl_record(&t, h, 0)), *nticks = PyLong_FromSsize_t(ticks + 1);
    if (est == NULL || nticks == NULL || PyObject_SetItem(t.win, key, a->entry) < 0) {
        Py_XDECREF(est);
        Py_XDECREF(nticks);
        return -1;
    }
    /* From here the tables have changed: the counts are written back whatever happens. */
    a->drop = SLOT(self, off_absent);
    SLOT(self, off_absent) = Py_NewRef(Py_None);
    tl_record(&t, h, 1);
    Py_SETREF(((PyListObject *)a->entry)->ob_item[5], est); /* AUX: the estimate at admission */
    Py_XSETREF(SLOT(t.pol, p_ticks), nticks);
    int rc = 0;
    Py_ssize_t n0 = n; /* a full cache evicts one per insertion: the count stays */
    n += 1;
    b += a->size;
    Py_ssize_t evicted = 0;
    while (rc == 0 && (b > limit || n > max_entries) && (LEN(t.win) || LEN(t.prob) || LEN(t.prot))) {
        PyObject *k = NULL, *e = tl_victim(&t, &k);
        if (e == NULL) {
            rc = -1;
            break;
        }
        Py_ssize_t es = entry_int(e, 1);
        Py_DECREF(k);
        Py_DECREF(e); /* the evicted value is freed here, in the section, as in Python under the lock */
        if (es < 0) {
            rc = -1;
            break;
        }
        b -= es;
        n -= 1;
        evicted += 1;
    }
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    Py_ssize_t ev = 0;
    if (evicted && get_ssize(self, off_evicted, &ev) == 0 && set_slot_ssize(self, off_evicted, ev + evicted) < 0) rc = -1;
    if ((n != n0 && set_slot_ssize(self, off_count, n) < 0) || set_slot_ssize(self, off_bytes, b) < 0) rc = -1;
    if (exc_type != NULL) {
        PyErr_Clear();
        PyErr_Restore(exc_type, exc_value, exc_tb);
    }
    return rc;
}

#define tl_set_slow(self, args, nargs) call_py(tl_py_set, self, args, nargs, NULL)

static PyObject *tl_set(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL) return call_py(tl_py_set, self, args, nargs, kwnames);
    if (nargs < 2 || nargs > 3 || (nargs == 3 && args[2] != Py_None)) return tl_set_slow(self, args, nargs);
    PyObject *key = args[0], *value = args[1], *ttl = SLOT(self, off_ttl);
    if (!PyUnicode_CheckExact(key) || !(PyUnicode_CheckExact(value) || PyBytes_CheckExact(value)) || ttl == NULL)
        return tl_set_slow(self, args, nargs);
    PyObject *expires = Py_NewRef(f_zero), *flags = Py_NewRef(i_zero);
    if (ttl != Py_None) { /* the cache's default ttl (the sweeper already watches it) */
        Py_DECREF(expires);
        Py_DECREF(flags);
        if (!PyFloat_CheckExact(ttl) || SLOT(self, off_watched) != Py_True) return tl_set_slow(self, args, nargs);
        PyObject *clock = PyDict_GetItemWithError(globals, clock_name); /* fastpaths._monotonic */
        if (clock == NULL) return PyErr_Occurred() ? NULL : tl_set_slow(self, args, nargs);
        PyObject *now = PyObject_CallNoArgs(clock);
        if (now == NULL) return NULL;
        double tnow = PyFloat_AsDouble(now);
        Py_DECREF(now);
        if (tnow == -1.0 && PyErr_Occurred()) return NULL;
        if ((expires = PyFloat_FromDouble(tnow + PyFloat_AS_DOUBLE(ttl))) == NULL) return NULL;
        if ((flags = PyLong_FromLong(F_EXPIRES)) == NULL) {
            Py_DECREF(expires);
            return NULL;
        }
    }
    Py_ssize_t vs = sizeof_of(value), ks = vs < 0 ? -1 : sizeof_of(key);
    PyObject *entry = ks < 0 ? NULL : PyList_New(6);
    PyObject *psize = entry == NULL ? NULL : PyLong_FromSsize_t(vs + ks + ENTRY_OVERHEAD);
    if (psize == NULL) {
        Py_XDECREF(entry);
        Py_DECREF(expires);
        Py_DECREF(flags);
        return NULL;
    }
    PyList_SET_ITEM(entry, 0, Py_NewRef(value));
    PyList_SET_ITEM(entry, 1, psize);
    PyList_SET_ITEM(entry, 2, expires);
    PyList_SET_ITEM(entry, 3, flags);
    PyList_SET_ITEM(entry, 4, Py_NewRef(i_zero));
    PyList_SET_ITEM(entry, 5, Py_NewRef(i_zero));
    SetArgs a = {key, entry, NULL, vs + ks + ENTRY_OVERHEAD};
    int rc = exclusive_section(self, tl_store, &a);
    Py_DECREF(entry);
    Py_XDECREF(a.drop);
    if (rc < 0) return NULL;
    if (rc == 1) return tl_set_slow(self, args, nargs);
    Py_RETURN_TRUE;
}

static PyMethodDef tl_set_def = {"set", (PyCFunction)(void (*)(void))tl_set, METH_FASTCALL | METH_KEYWORDS,
                                 "set(key, value, ttl=None)\n--\n\nStore value under key (C fast path, TinyLFU)."};

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


static int common_offsets(PyObject *cls);

static PyObject *install_lru_set(PyObject *mod, PyObject *args) {
    PyObject *cls, *py_set;
    Py_ssize_t overhead;
    if (!PyArg_ParseTuple(args, "O!On", &PyType_Type, &cls, &py_set, &overhead)) return NULL;
    if (overhead != ENTRY_OVERHEAD) {
        PyErr_SetString(PyExc_ValueError, "ENTRY_OVERHEAD differs from the C build's");
        return NULL;
    }
    if (common_offsets(cls) < 0) return NULL;
    Py_XSETREF(lru_py_set, Py_NewRef(py_set));
    PyObject *descr = PyDescr_NewMethod((PyTypeObject *)cls, &lru_set_def);
    if (descr == NULL) return NULL;
    int rc = PyObject_SetAttrString(cls, "set", descr);
    Py_DECREF(descr);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static int common_offsets(PyObject *cls) {
    if (slot_offset(cls, "_lock", &off_lock) < 0 || slot_offset(cls, "_inflight", &off_inflight) < 0 ||
        slot_offset(cls, "_limit", &off_limit) < 0 || slot_offset(cls, "_max_entries", &off_max_entries) < 0 ||
        slot_offset(cls, "_count", &off_count) < 0 || slot_offset(cls, "_bytes", &off_bytes) < 0 ||
        slot_offset(cls, "_updates", &off_updates) < 0 || slot_offset(cls, "_evicted_size", &off_evicted) < 0 ||
        slot_offset(cls, "ttl", &off_ttl) < 0 || slot_offset(cls, "_policy", &off_policy) < 0 ||
        slot_offset(cls, "_pending", &off_pending) < 0 || slot_offset(cls, "_hot_get", &off_hot_get) < 0)
        return -1;
    if (s_sizeof == NULL) {
        s_sizeof = PyUnicode_InternFromString("__sizeof__");
        f_zero = PyFloat_FromDouble(0.0);
        i_zero = PyLong_FromLong(0);
        str_sizeof = PyObject_GetAttrString((PyObject *)&PyUnicode_Type, "__sizeof__");
        bytes_sizeof = PyObject_GetAttrString((PyObject *)&PyBytes_Type, "__sizeof__");
        od_popitem = PyObject_GetAttrString((PyObject *)&PyODict_Type, "popitem");
        od_mte = PyObject_GetAttrString((PyObject *)&PyODict_Type, "move_to_end");
        PyObject *thread = PyImport_ImportModule("_thread");
        if (thread != NULL) {
            lock_type = (PyTypeObject *)PyObject_GetAttrString(thread, "LockType");
            Py_DECREF(thread);
            if (lock_type != NULL && !PyType_Check(lock_type)) {
                Py_CLEAR(lock_type);
                PyErr_SetString(PyExc_TypeError, "_thread.LockType is not a type");
            }
            if (lock_type != NULL) lock_locked = PyObject_GetAttrString((PyObject *)lock_type, "locked");
        }
        if (!s_sizeof || !f_zero || !i_zero || !str_sizeof || !bytes_sizeof || !od_popitem || !od_mte || !lock_type ||
            !lock_locked) {
            Py_CLEAR(s_sizeof); /* so that a later install tries again */
            return -1;
        }
    }
    return 0;
}

static PyObject *install_tinylfu(PyObject *mod, PyObject *args) {
    PyObject *cls, *py_set, *ptype;
    Py_ssize_t overhead;
    if (!PyArg_ParseTuple(args, "O!OO!n", &PyType_Type, &cls, &py_set, &PyType_Type, &ptype, &overhead)) return NULL;
    if (overhead != ENTRY_OVERHEAD) {
        PyErr_SetString(PyExc_ValueError, "ENTRY_OVERHEAD differs from the C build's");
        return NULL;
    }
    if (conf_tinylfu.py_get == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "install() the TinyLFU get first");
        return NULL;
    }
    if (common_offsets(cls) < 0 || slot_offset(cls, "_absent", &off_absent) < 0 ||
        slot_offset(cls, "_watched", &off_watched) < 0 || slot_offset(cls, "_hits", &off_hits) < 0 ||
        slot_offset(cls, "_misses", &off_misses) < 0)
        return NULL;
    struct {
        const char *name;
        Py_ssize_t *off;
    } ps[] = {{"_win", &p_win},         {"_prob", &p_prob},       {"_prot", &p_prot},       {"_rows", &p_rows},
              {"_door", &p_door},       {"_mask", &p_mask},       {"_dmask", &p_dmask},     {"_s1", &p_s1},
              {"_s2", &p_s2},           {"_s3", &p_s3},           {"counter_max", &p_cmax}, {"_ticks", &p_ticks},
              {"_sample", &p_sample},   {"_grow_at", &p_grow_at}, {"_win_max", &p_win_max}, {"_main_max", &p_main_max},
              {"_prot_max", &p_prot_max}};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        if (slot_offset(ptype, ps[i].name, ps[i].off) < 0) return NULL;
    Py_XSETREF(tl_policy_type, (PyTypeObject *)Py_NewRef(ptype));
    Py_XSETREF(tl_py_set, Py_NewRef(py_set));
    PyObject *descr = PyDescr_NewMethod((PyTypeObject *)cls, &tl_set_def);
    if (descr == NULL) return NULL;
    int rc = PyObject_SetAttrString(cls, "set", descr);
    Py_DECREF(descr);
    if (rc < 0) return NULL;
    conf_tinylfu.cold = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install_lru_set", install_lru_set, METH_VARARGS,
     "install_lru_set(cls, py_set, entry_overhead): put the C set on fastpaths._LRUCache."},
    {"install_tinylfu", install_tinylfu, METH_VARARGS,
     "install_tinylfu(cls, py_set, policy_type, entry_overhead): put the C set and the C locked miss on "
     "fastpaths._TinyLFUCache (after install())."},
    {"install", install, METH_VARARGS,
     "install(cls, py_get, counts_hits, miss_is_final, globals): put the C get on cls (one of fastpaths.py's classes)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_fastget", "SharedPromptCache's get and set in C.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__fastget(void) { return PyModule_Create(&moddef); }
