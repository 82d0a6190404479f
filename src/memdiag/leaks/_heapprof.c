/* memdiag.leaks._heapprof: a sampled heap profiler hooked into CPython's allocator API.
 *
 * start() wraps the allocators found in the RAW, MEM and OBJ domains (it chains to
 * them, never replaces them); every allocation counts its bytes down a per-thread
 * Poisson countdown and, rarely, is sampled with its Python stack (see _hp_core.h).
 * stop() unhooks when our hooks are still the installed ones; when another hook (say
 * tracemalloc) was installed on top of ours since, ours stay in the chain, passive.
 * RAW is called without the GIL: that path takes a stack only when the thread holds
 * the GIL, and the tables are guarded by their own mutex.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <frameobject.h>
#if PY_VERSION_HEX >= 0x030B0000
/* the interpreter's frames, read without allocating (as Modules/_tracemalloc.c does) */
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
#endif

#include "_hp_core.h"

typedef struct {
    PyMemAllocatorEx orig;
    PyMemAllocatorDomain domain;
    int reroute; /* MEM/OBJ over plain pymalloc: no free hook, sampled small blocks rerouted */
} hook_ctx_t;

static hook_ctx_t hk_ctx[3];
static PyMemAllocatorEx hk_hooks[3];
static int hk_chained = 0; /* our hooks are somewhere in the allocator chains */
static int hk_atfork_done = 0;
static const PyMemAllocatorDomain hk_domains[3] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};

/* The preload shim's mask (memdiag run): Python's own malloc calls are not native. */
static void (*hk_shim_mask)(int) = NULL;

static inline void hk_sampled(void *ptr, size_t size, hook_ctx_t *c) {
    hp_tls.guard++;
    hp_record(ptr, size, HP_DOMAIN_PYTHON, 1);
    hp_tls.guard--;
    (void)c;
}

/* pymalloc serves requests up to 512 bytes from its arenas (mmap) and hands larger ones
 * to PyMem_RawMalloc, i.e. to our RAW hook: a large request is made with the guard held
 * so that the RAW hook does not count (and sample) the same block a second time. Below
 * the threshold (with room for the debug hooks' 24-byte overhead) no nested call can
 * reach a hook, so the common small allocation skips the guard. Under `memdiag run` the
 * preload shim is masked around every call: Python's own malloc calls are not native. */
#define HK_NO_NESTING 448

/* The fast paths count the bytes *before* the call and tail-call the allocator found
 * (no stack frame, about ten instructions); only the allocation that crosses the
 * countdown, a large request (guarded) or a call under the shim takes the slow path. */
/* Frees without a hook. Over plain pymalloc (and no preload shim), the MEM and OBJ domains
 * get no free hook at all: their frees go straight to pymalloc, a hook and an indirect
 * jump fewer per free (about half the hooks' cost). What makes that safe: pymalloc hands
 * every block it did not serve from its arenas to PyMem_RawFree, i.e. through our RAW
 * hook, which sees it. So a *sampled* small block (<= 512 bytes) is asked of the
 * allocator found at 513 bytes: pymalloc serves it from the raw allocator, its free and
 * realloc come back through the RAW hooks, and its sample leaves the live heap then.
 * The cost is memory: at most 529 bytes per live sample of a small block (about one per
 * 512 KiB of live heap at the default interval, ~0.1 % of it), at most HP_REROUTED_MAX of
 * them (8.7 MB, in overhead_bytes and bound_bytes); past that bound a sampled small block
 * counts as allocated, not live, and in `dropped`. */
#define HK_PYMALLOC_MAX 512

static __attribute__((noinline)) void *hk_small_sampled(hook_ctx_t *c, size_t size, size_t nelem, size_t elsize,
                                                        int zero) {
    hp_tls_t *t = &hp_tls;
    int reroute = atomic_load_explicit(&hp_rerouted_n, memory_order_relaxed) < HP_REROUTED_MAX;
    void *p;
    t->guard = 1; /* the RAW hook must not count the block again */
    if (reroute)
        p = zero ? c->orig.calloc(c->orig.ctx, 1, HK_PYMALLOC_MAX + 1) : c->orig.malloc(c->orig.ctx, HK_PYMALLOC_MAX + 1);
    else
        p = zero ? c->orig.calloc(c->orig.ctx, nelem, elsize) : c->orig.malloc(c->orig.ctx, size);
    t->guard = 0;
    if (p != NULL) {
        t->rerouted = reroute ? 1 : -1;
        hk_sampled(p, size, c);
        t->rerouted = 0;
    }
    return p;
}

/* A realloc result that is to be sampled, when the domain has no free hook: moved to a
 * rerouted block (realloc may move a block anyway). */
static __attribute__((noinline)) void *hk_move_sampled(hook_ctx_t *c, void *p, size_t size) {
    hp_tls_t *t = &hp_tls;
    void *q = NULL;
    if (atomic_load_explicit(&hp_rerouted_n, memory_order_relaxed) < HP_REROUTED_MAX) {
        t->guard = 1;
        q = c->orig.malloc(c->orig.ctx, HK_PYMALLOC_MAX + 1);
        t->guard = 0;
    }
    if (q != NULL) {
        memcpy(q, p, size);
        c->orig.free(c->orig.ctx, p);
        p = q;
    }
    t->rerouted = q != NULL ? 1 : -1;
    hk_sampled(p, size, c);
    t->rerouted = 0;
    return p;
}

static __attribute__((noinline)) void *hk_malloc_slow(hook_ctx_t *c, size_t size) {
    hp_tls_t *t = &hp_tls;
    void *p;
    if (c->reroute && size <= HK_PYMALLOC_MAX) { /* implies no shim; pymalloc's own: no nesting */
        if (t->guard) return c->orig.malloc(c->orig.ctx, size);
        if (hp_should_sample(size)) return hk_small_sampled(c, size, 0, 0, 0);
        return c->orig.malloc(c->orig.ctx, size);
    }
    if (size <= HK_NO_NESTING && hk_shim_mask == NULL) {
        p = c->orig.malloc(c->orig.ctx, size);
    } else {
        if (t->guard) return c->orig.malloc(c->orig.ctx, size);
        t->guard = 1;
        if (hk_shim_mask) hk_shim_mask(1);
        p = c->orig.malloc(c->orig.ctx, size);
        if (hk_shim_mask) hk_shim_mask(-1);
        t->guard = 0;
    }
    if (hp_should_sample(size) && p != NULL) hk_sampled(p, size, c);
    return p;
}

static void *hk_malloc(void *ctx, size_t size) {
    hook_ctx_t *c = ctx;
    if (__builtin_expect(size <= HK_NO_NESTING && hk_shim_mask == NULL, 1)) {
        hp_tls_t *t = &hp_tls;
        int64_t left = t->countdown - (int64_t)size;
        if (__builtin_expect(left > 0, 1)) {
            t->countdown = left;
            return c->orig.malloc(c->orig.ctx, size);
        }
    }
    return hk_malloc_slow(c, size);
}

static __attribute__((noinline)) void *hk_calloc_slow(hook_ctx_t *c, size_t nelem, size_t elsize) {
    hp_tls_t *t = &hp_tls;
    size_t size = nelem * elsize; /* the underlying calloc checks the overflow */
    void *p;
    if (c->reroute && nelem <= HK_PYMALLOC_MAX && elsize <= HK_PYMALLOC_MAX && size <= HK_PYMALLOC_MAX) {
        if (t->guard) return c->orig.calloc(c->orig.ctx, nelem, elsize);
        if (hp_should_sample(size)) return hk_small_sampled(c, size, nelem, elsize, 1);
        return c->orig.calloc(c->orig.ctx, nelem, elsize);
    }
    if (size <= HK_NO_NESTING && nelem <= HK_NO_NESTING && hk_shim_mask == NULL) {
        p = c->orig.calloc(c->orig.ctx, nelem, elsize);
    } else {
        if (t->guard) return c->orig.calloc(c->orig.ctx, nelem, elsize);
        t->guard = 1;
        if (hk_shim_mask) hk_shim_mask(1);
        p = c->orig.calloc(c->orig.ctx, nelem, elsize);
        if (hk_shim_mask) hk_shim_mask(-1);
        t->guard = 0;
    }
    if (hp_should_sample(size) && p != NULL) hk_sampled(p, size, c);
    return p;
}

static void *hk_calloc(void *ctx, size_t nelem, size_t elsize) {
    hook_ctx_t *c = ctx;
    size_t size = nelem * elsize;
    if (__builtin_expect(size <= HK_NO_NESTING && nelem <= HK_NO_NESTING && hk_shim_mask == NULL, 1)) {
        hp_tls_t *t = &hp_tls;
        int64_t left = t->countdown - (int64_t)size;
        if (__builtin_expect(left > 0, 1)) {
            t->countdown = left;
            return c->orig.calloc(c->orig.ctx, nelem, elsize);
        }
    }
    return hk_calloc_slow(c, nelem, elsize);
}

static void *hk_realloc(void *ctx, void *ptr, size_t size) {
    hook_ctx_t *c = ctx;
    hp_tls_t *t = &hp_tls;
    hp_untrack(ptr);
    if (t->guard) return c->orig.realloc(c->orig.ctx, ptr, size);
    /* a realloc may move a small block to the raw allocator: always guarded */
    t->guard = 1;
    if (hk_shim_mask) hk_shim_mask(1);
    void *p = c->orig.realloc(c->orig.ctx, ptr, size);
    if (hk_shim_mask) hk_shim_mask(-1);
    t->guard = 0;
    if (hp_should_sample(size) && p != NULL) hk_sampled(p, size, c);
    return p;
}

/* The raw domain is innermost (malloc itself): it only needs to see the guard. */
static __attribute__((noinline)) void *hk_raw_malloc_slow(hook_ctx_t *c, size_t size) {
    void *p = c->orig.malloc(c->orig.ctx, size);
    if (hp_should_sample(size) && p != NULL) hk_sampled(p, size, c);
    return p;
}

static void *hk_raw_malloc(void *ctx, size_t size) {
    hook_ctx_t *c = ctx;
    hp_tls_t *t = &hp_tls;
    if (t->guard) return c->orig.malloc(c->orig.ctx, size);
    int64_t left = t->countdown - (int64_t)size;
    if (__builtin_expect(left > 0, 1)) {
        t->countdown = left;
        return c->orig.malloc(c->orig.ctx, size);
    }
    return hk_raw_malloc_slow(c, size);
}

static void *hk_raw_calloc(void *ctx, size_t nelem, size_t elsize) {
    hook_ctx_t *c = ctx;
    void *p = c->orig.calloc(c->orig.ctx, nelem, elsize);
    if (hp_tls.guard) return p;
    if (hp_should_sample(nelem * elsize) && p != NULL) hk_sampled(p, nelem * elsize, c);
    return p;
}

static void *hk_raw_realloc(void *ctx, void *ptr, size_t size) {
    hook_ctx_t *c = ctx;
    hp_untrack(ptr);
    void *p = c->orig.realloc(c->orig.ctx, ptr, size);
    if (hp_tls.guard) return p;
    if (hp_should_sample(size) && p != NULL) hk_sampled(p, size, c);
    return p;
}

static __attribute__((noinline)) void hk_free_slow(hook_ctx_t *c, void *ptr) {
    hp_untrack_slow(ptr);
    c->orig.free(c->orig.ctx, ptr);
}

static void hk_free(void *ctx, void *ptr) {
    hook_ctx_t *c = ctx;
    if (__builtin_expect(hp_maybe_sampled(ptr), 0)) {
        hk_free_slow(c, ptr);
        return;
    }
    c->orig.free(c->orig.ctx, ptr);
}

/* The fast paths again, specialised per domain, installed when no preload shim is
 * present (the generic hooks above serve `memdiag run`): the allocator found is read from
 * a static rather than through ctx, and the shim is not asked about, so that hk_malloc's
 * fast path is 10 instructions and hk_free's 10 (callgrind). Same counting, guard and
 * sampling as the generic hooks. */
#define HK_FAST_MEM(I, SFX)                                                                       \
    static void *hk_malloc_##SFX(void *ctx, size_t size) {                                        \
        (void)ctx;                                                                                \
        if (__builtin_expect(size <= HK_NO_NESTING, 1)) {                                         \
            hp_tls_t *t = &hp_tls;                                                                \
            int64_t left = t->countdown - (int64_t)size;                                          \
            if (__builtin_expect(left > 0, 1)) {                                                  \
                t->countdown = left;                                                              \
                return hk_ctx[I].orig.malloc(hk_ctx[I].orig.ctx, size);                           \
            }                                                                                     \
        }                                                                                         \
        return hk_malloc_slow(&hk_ctx[I], size);                                                  \
    }                                                                                             \
    static void *hk_calloc_##SFX(void *ctx, size_t nelem, size_t elsize) {                        \
        (void)ctx;                                                                                \
        size_t size = nelem * elsize;                                                             \
        if (__builtin_expect(size <= HK_NO_NESTING && nelem <= HK_NO_NESTING, 1)) {               \
            hp_tls_t *t = &hp_tls;                                                                \
            int64_t left = t->countdown - (int64_t)size;                                          \
            if (__builtin_expect(left > 0, 1)) {                                                  \
                t->countdown = left;                                                              \
                return hk_ctx[I].orig.calloc(hk_ctx[I].orig.ctx, nelem, elsize);                  \
            }                                                                                     \
        }                                                                                         \
        return hk_calloc_slow(&hk_ctx[I], nelem, elsize);                                         \
    }                                                                                             \
    static void *hk_realloc_##SFX(void *ctx, void *ptr, size_t size) {                            \
        (void)ctx;                                                                                \
        hp_tls_t *t = &hp_tls;                                                                    \
        /* rerouting: every tracked block is the raw allocator's, seen by the RAW realloc hook */ \
        if (!hk_ctx[I].reroute) hp_untrack(ptr);                                                  \
        if (t->guard) return hk_ctx[I].orig.realloc(hk_ctx[I].orig.ctx, ptr, size);               \
        t->guard = 1; /* a realloc may move a small block to the raw allocator */                 \
        void *p = hk_ctx[I].orig.realloc(hk_ctx[I].orig.ctx, ptr, size);                          \
        t->guard = 0;                                                                             \
        if (hp_should_sample(size) && p != NULL) {                                                \
            if (hk_ctx[I].reroute && size <= HK_PYMALLOC_MAX) return hk_move_sampled(&hk_ctx[I], p, size); \
            hk_sampled(p, size, &hk_ctx[I]);                                                      \
        }                                                                                         \
        return p;                                                                                 \
    }
#define HK_FAST_FREE(I, SFX)                                                                      \
    static void hk_free_##SFX(void *ctx, void *ptr) {                                             \
        (void)ctx;                                                                                \
        if (__builtin_expect(hp_maybe_sampled(ptr), 0)) {                                         \
            hk_free_slow(&hk_ctx[I], ptr);                                                        \
            return;                                                                               \
        }                                                                                         \
        hk_ctx[I].orig.free(hk_ctx[I].orig.ctx, ptr);                                             \
    }
HK_FAST_MEM(1, mem)
HK_FAST_MEM(2, obj)
HK_FAST_FREE(0, raw)
HK_FAST_FREE(1, mem)
HK_FAST_FREE(2, obj)

static void *hk_malloc_raw(void *ctx, size_t size) {
    (void)ctx;
    hp_tls_t *t = &hp_tls;
    if (t->guard) return hk_ctx[0].orig.malloc(hk_ctx[0].orig.ctx, size);
    int64_t left = t->countdown - (int64_t)size;
    if (__builtin_expect(left > 0, 1)) {
        t->countdown = left;
        return hk_ctx[0].orig.malloc(hk_ctx[0].orig.ctx, size);
    }
    return hk_raw_malloc_slow(&hk_ctx[0], size);
}

static int hk_ours_on_top(int i) {
    PyMemAllocatorEx cur;
    PyMem_GetAllocator(hk_domains[i], &cur);
    return cur.ctx == hk_hooks[i].ctx && cur.malloc == hk_hooks[i].malloc;
}

/* ---------------------------------------------------------------- Python API */
/* Called by the preload shim, on this thread, without the GIL: see hp_hand_over_stack. */
static void hk_want_stack(void) {
    hp_tls.want_stack = 1;
    hp_tls.countdown = 0; /* the next allocation takes the slow path */
}

static PyObject *hp_py_start(PyObject *self, PyObject *args) {
    unsigned long long interval = 512 * 1024;
    int max_frames = 32;
    if (!PyArg_ParseTuple(args, "|Ki", &interval, &max_frames)) return NULL;
    if (interval < 1 || interval > (1ULL << 40)) {
        PyErr_SetString(PyExc_ValueError, "interval_bytes must be from 1 to 2**40");
        return NULL;
    }
    if (max_frames < 1 || max_frames > HP_MAX_FRAMES_LIMIT) {
        PyErr_Format(PyExc_ValueError, "max_frames must be from 1 to %d", HP_MAX_FRAMES_LIMIT);
        return NULL;
    }
    if (hp_tables_init() < 0) return PyErr_NoMemory();
    if (!hk_atfork_done) {
        if (pthread_atfork(hp_atfork_prepare, hp_atfork_parent, hp_atfork_child) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "pthread_atfork failed");
            return NULL;
        }
        hk_atfork_done = 1;
    }
    pthread_mutex_lock(&hp_mutex);
    int was = atomic_load(&hp_enabled);
    if (!was) hp_clear_samples();
    atomic_store(&hp_interval, (uint64_t)interval);
    hp_max_frames = max_frames;
    pthread_mutex_unlock(&hp_mutex);
    if (hk_shim_mask == NULL) {
        hk_shim_mask = (void (*)(int))dlsym(RTLD_DEFAULT, "memdiag_preload_mask");
        hp_intern_hook = (void (*)(const void *, int))dlsym(RTLD_DEFAULT, "memdiag_preload_intern");
        void (*reg)(void (*)(void)) = (void (*)(void (*)(void)))dlsym(RTLD_DEFAULT, "memdiag_preload_register");
        if (reg != NULL) reg(hk_want_stack);
    }
    if (!hk_chained) {
        /* plain pymalloc under MEM and OBJ (nothing else installed): no free hooks there */
        int reroute = 0;
        if (hk_shim_mask == NULL) {
            const char *(*name)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "_PyMem_GetCurrentAllocatorName");
            const char *nm = name != NULL ? name() : NULL;
            reroute = nm != NULL && strcmp(nm, "pymalloc") == 0;
        }
        for (int i = 0; i < 3; i++) {
            PyMem_GetAllocator(hk_domains[i], &hk_ctx[i].orig);
            hk_ctx[i].domain = hk_domains[i];
            hk_hooks[i].ctx = &hk_ctx[i];
            int raw = hk_domains[i] == PYMEM_DOMAIN_RAW;
            hk_hooks[i].malloc = raw ? hk_raw_malloc : hk_malloc;
            hk_hooks[i].calloc = raw ? hk_raw_calloc : hk_calloc;
            hk_hooks[i].realloc = raw ? hk_raw_realloc : hk_realloc;
            hk_hooks[i].free = hk_free;
        }
        if (hk_shim_mask == NULL) { /* the specialised fast paths (hk_ctx[i] is domain i) */
            hk_hooks[0].malloc = hk_malloc_raw;
            hk_hooks[0].free = hk_free_raw;
            hk_hooks[1].malloc = hk_malloc_mem;
            hk_hooks[1].calloc = hk_calloc_mem;
            hk_hooks[1].realloc = hk_realloc_mem;
            hk_hooks[1].free = hk_free_mem;
            hk_hooks[2].malloc = hk_malloc_obj;
            hk_hooks[2].calloc = hk_calloc_obj;
            hk_hooks[2].realloc = hk_realloc_obj;
            hk_hooks[2].free = hk_free_obj;
        }
        for (int i = 1; i < 3; i++) {
            hk_ctx[i].reroute = reroute;
            if (reroute) { /* pymalloc's own free, with its own ctx (our MEM/OBJ hooks ignore ctx) */
                hk_hooks[i].ctx = hk_ctx[i].orig.ctx;
                hk_hooks[i].free = hk_ctx[i].orig.free;
            }
        }
        /* RAW may be called by threads without the GIL: the hook is complete before it is
         * published, and the original stays valid for calls still in flight. */
        for (int i = 0; i < 3; i++) PyMem_SetAllocator(hk_domains[i], &hk_hooks[i]);
        hk_chained = 1;
    }
    atomic_fetch_add(&hp_gen, 1); /* every thread redraws its countdown */
    atomic_store(&hp_enabled, 1);
    Py_RETURN_NONE;
}

static PyObject *hp_py_stop(PyObject *self, PyObject *noargs) {
    atomic_store(&hp_enabled, 0);
    if (hk_chained && hk_ours_on_top(0) && hk_ours_on_top(1) && hk_ours_on_top(2)) {
        for (int i = 0; i < 3; i++) PyMem_SetAllocator(hk_domains[i], &hk_ctx[i].orig);
        hk_chained = 0;
    }
    /* Frees of blocks sampled before stop() may still come through a hook in flight;
     * the live table stays valid for them. */
    Py_RETURN_NONE;
}

static PyObject *hp_py_running(PyObject *self, PyObject *noargs) {
    return PyBool_FromLong(atomic_load(&hp_enabled));
}

static PyObject *hp_py_chained(PyObject *self, PyObject *noargs) { return PyBool_FromLong(hk_chained); }

static PyObject *hp_py_set_thread_ignored(PyObject *self, PyObject *arg) {
    int flag = PyObject_IsTrue(arg);
    if (flag < 0) return NULL;
    int prev = hp_tls.ignored;
    hp_tls.ignored = flag;
    return PyBool_FromLong(prev);
}

/* set_ignored_threads(idents): threads (threading.get_ident() values) never sampled. */
static PyObject *hp_py_set_ignored_threads(PyObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "set_ignored_threads expects a sequence of thread idents");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    pthread_t ids[HP_IGNORED_THREADS_MAX];
    int k = 0;
    for (Py_ssize_t i = 0; i < n && k < HP_IGNORED_THREADS_MAX; i++) {
        unsigned long v = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == (unsigned long)-1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
        ids[k++] = (pthread_t)v;
    }
    Py_DECREF(seq);
    pthread_mutex_lock(&hp_mutex);
    memcpy(hp_ignored_threads, ids, sizeof(pthread_t) * (size_t)k);
    hp_n_ignored_threads = k;
    pthread_mutex_unlock(&hp_mutex);
    Py_RETURN_NONE;
}

static PyObject *hp_py_snapshot(PyObject *self, PyObject *noargs) {
    static const char *names[2] = {"python", "native"};
    return hp_snapshot_tables(names);
}

static PyObject *hp_py_reset(PyObject *self, PyObject *noargs) {
    pthread_mutex_lock(&hp_mutex);
    hp_clear_samples();
    pthread_mutex_unlock(&hp_mutex);
    Py_RETURN_NONE;
}

/* For tests: the exact sampling probability and weight this build uses. */
static PyObject *hp_py_weight(PyObject *self, PyObject *args) {
    double size, mean;
    if (!PyArg_ParseTuple(args, "dd", &size, &mean)) return NULL;
    return PyFloat_FromDouble(size / (1.0 - exp(-size / mean)));
}

static PyMethodDef hp_methods[] = {
    {"start", hp_py_start, METH_VARARGS, "start(interval_bytes=524288, max_frames=32): hook and sample"},
    {"stop", hp_py_stop, METH_NOARGS, "stop sampling; unhook when our hooks are on top"},
    {"running", hp_py_running, METH_NOARGS, "whether sampling is on"},
    {"chained", hp_py_chained, METH_NOARGS, "whether our hooks are in the allocator chains"},
    {"set_thread_ignored", hp_py_set_thread_ignored, METH_O,
     "set_thread_ignored(flag) -> previous: never sample this thread's allocations"},
    {"set_ignored_threads", hp_py_set_ignored_threads, METH_O,
     "set_ignored_threads(idents): never sample these threads (at most 64)"},
    {"snapshot", hp_py_snapshot, METH_NOARGS, "(rows, stats) of the sampled heap"},
    {"reset", hp_py_reset, METH_NOARGS, "forget every sample"},
    {"weight", hp_py_weight, METH_VARARGS, "weight(size, mean): bytes a sample of this size stands for"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef hp_module = {PyModuleDef_HEAD_INIT, "_heapprof",
                                       "Sampled heap profiler (CPython allocator hooks)", -1, hp_methods};

PyMODINIT_FUNC PyInit__heapprof(void) {
    PyObject *m = PyModule_Create(&hp_module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "MAX_FRAMES_LIMIT", HP_MAX_FRAMES_LIMIT) < 0 ||
        PyModule_AddIntConstant(m, "LIVE_CAPACITY", HP_LIVE_CAP_MAX / 2) < 0 ||
        PyModule_AddIntConstant(m, "STACK_CAPACITY", HP_STACK_CAP_MAX / 4 * 3) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
