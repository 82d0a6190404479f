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
#include <malloc.h> /* malloc_usable_size */
#if PY_VERSION_HEX >= 0x030B0000
/* the interpreter's frames, read without allocating (as Modules/_tracemalloc.c does) */
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
#endif

#define HP_LINE_CACHE 1 /* the line cache of hp_capture (GIL-held captures only) */
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

/* The fast paths, placed together (.text.hot): a handful of cache lines of code. */
#define HK_HOT __attribute__((hot))

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

/* What the specialised mem/object fast paths read, in one cache line: the GIL's countdown
 * (hp_gil_count), the largest request they count on it (over plain pymalloc every request
 * it serves itself, 512 bytes: larger ones reach the raw hooks, counted there; else
 * HK_NO_NESTING, below which no nested call reaches a hook) and the allocators found
 * ([0] mem, [1] object; copies of hk_ctx[1..2].orig's, set before the hooks go in). */
static struct {
    _Atomic uint64_t left;
    size_t fast_max;
    void *(*malloc[2])(void *, size_t);
    void *(*calloc[2])(void *, size_t, size_t);
    void *(*realloc[2])(void *, void *, size_t);
} hk_hot __attribute__((aligned(64))) = {.fast_max = HK_NO_NESTING};
#define hk_fast_max hk_hot.fast_max

/* The MEM/OBJ realloc over plain pymalloc, without a guard and with a tail call. pymalloc
 * hands the raw allocator every block it does not serve: a request over 512 bytes
 * (PyMem_RawMalloc) and a block that already is the raw allocator's (PyMem_RawRealloc), so
 * the RAW hooks count, sample and untrack those themselves; this hook counts only the
 * requests of up to 512 bytes, and tail-calls pymalloc (~12 instructions instead of ~29
 * with the guard and a call). The one case counted twice: a raw block (a rerouted sample,
 * a large block shrinking) reallocated to 512 bytes or less: its bytes advance the
 * countdown in both hooks (rare; the weights stay those of the sizes counted). The
 * countdown crossed: call pymalloc, then sample the result (moved to a rerouted block). A
 * sampled block's own realloc comes back through the RAW realloc hook, which untracks it. */
static __attribute__((noinline)) void *hk_realloc_pymalloc(hook_ctx_t *c, void *ptr, size_t size) {
    void *p = c->orig.realloc(c->orig.ctx, ptr, size);
    if (p != NULL && hp_crossed_gil(&hk_hot.left, size)) return hk_move_sampled(c, p, size); /* not under the guard */
    return p;
}


/* The specialised fast path's slow side: the GIL's countdown crossed, or a larger request
 * (guarded and counted on the thread's countdown by hk_malloc_slow). */
static __attribute__((noinline)) void *hk_malloc_gil_slow(hook_ctx_t *c, size_t size) {
    if (size > hk_fast_max) return hk_malloc_slow(c, size);
    if (!hp_crossed_gil(&hk_hot.left, size)) return c->orig.malloc(c->orig.ctx, size);
    if (c->reroute) return hk_small_sampled(c, size, 0, 0, 0);
    void *p = c->orig.malloc(c->orig.ctx, size); /* below HK_NO_NESTING: no nested hook */
    if (p != NULL) hk_sampled(p, size, c);
    return p;
}

static __attribute__((noinline)) void *hk_calloc_gil_slow(hook_ctx_t *c, size_t nelem, size_t elsize) {
    size_t size = nelem * elsize; /* the underlying calloc checks the overflow */
    if (size > hk_fast_max || nelem > hk_fast_max) return hk_calloc_slow(c, nelem, elsize);
    if (!hp_crossed_gil(&hk_hot.left, size)) return c->orig.calloc(c->orig.ctx, nelem, elsize);
    if (c->reroute && elsize <= HK_PYMALLOC_MAX) return hk_small_sampled(c, size, nelem, elsize, 1);
    void *p = c->orig.calloc(c->orig.ctx, nelem, elsize);
    if (p != NULL) hk_sampled(p, size, c);
    return p;
}

/* The fast paths again, specialised per domain, installed when no preload shim is
 * present (the generic hooks above serve `memdiag run`): the allocator found is read from
 * a static, the shim is not asked about, and the bytes are counted on the GIL's countdown
 * (hp_gil_count: the mem/object domains are called with the GIL held). The hook's own
 * context is the allocator's (start() installs them so), passed through untouched: a
 * malloc is 7 instructions ending in a tail jump (cmp/ja on the size, load/sub/jb/store on
 * the countdown, jmp), a small realloc over pymalloc the same. Same counting, guard and
 * sampling as the generic hooks. */
#define HK_FAST_MEM(I, SFX)                                                                        \
    static HK_HOT void *hk_malloc_##SFX(void *ctx, size_t size) {                                         \
        if (__builtin_expect(size <= hk_fast_max && !hp_gil_count(&hk_hot.left, size), 1))                       \
            return hk_hot.malloc[I - 1](ctx, size);                                                \
        return hk_malloc_gil_slow(&hk_ctx[I], size);                                               \
    }                                                                                              \
    static HK_HOT void *hk_calloc_##SFX(void *ctx, size_t nelem, size_t elsize) {                         \
        size_t size = nelem * elsize;                                                              \
        if (__builtin_expect(size <= hk_fast_max && nelem <= hk_fast_max && !hp_gil_count(&hk_hot.left, size), 1)) \
            return hk_hot.calloc[I - 1](ctx, nelem, elsize);                                       \
        return hk_calloc_gil_slow(&hk_ctx[I], nelem, elsize);                                      \
    }                                                                                              \
    /* not over plain pymalloc: every realloc guarded (it may move a block to the raw domain) */  \
    static void *hk_realloc_guarded_##SFX(void *ctx, void *ptr, size_t size) {                     \
        hp_tls_t *t = &hp_tls;                                                                     \
        (void)ctx;                                                                                 \
        hp_untrack(ptr);                                                                           \
        if (t->guard) return hk_ctx[I].orig.realloc(hk_ctx[I].orig.ctx, ptr, size);                \
        t->guard = 1;                                                                              \
        void *p = hk_ctx[I].orig.realloc(hk_ctx[I].orig.ctx, ptr, size);                           \
        t->guard = 0;                                                                              \
        if (hp_should_sample(size) && p != NULL) hk_sampled(p, size, &hk_ctx[I]);                  \
        return p;                                                                                  \
    }                                                                                              \
    /* plain pymalloc: see hk_realloc_pymalloc */                                                 \
    static HK_HOT void *hk_realloc_##SFX(void *ctx, void *ptr, size_t size) {                             \
        if (__builtin_expect(size > HK_PYMALLOC_MAX || !hp_gil_count(&hk_hot.left, size), 1))                    \
            return hk_hot.realloc[I - 1](ctx, ptr, size);                                          \
        return hk_realloc_pymalloc(&hk_ctx[I], ptr, size);                                         \
    }
#define HK_FAST_FREE(I, SFX)                                                                      \
    static HK_HOT void hk_free_##SFX(void *ctx, void *ptr) {                                             \
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

/* ---------------------------------------------------------------- Python's bytes from malloc
 * malloc's own figures (mallinfo2) mix native memory (C extensions, ctypes) with Python's:
 * over plain pymalloc every block Python takes from malloc passes the RAW hooks (direct
 * PyMem_RawMalloc calls, and pymalloc's requests over 512 bytes; its arenas are mmap'ed,
 * not malloc'ed). The RAW hooks installed then also keep an exact count of the bytes those
 * blocks take in malloc's figures (malloc_usable_size + one size_t of chunk header), so that
 * native = malloc's bytes in use - Python's bytes, exactly (see memdiag/leaks/livecheck.py).
 * The count costs a plain add to a thread-local counter (no atomic read-modify-write, no
 * lock) and the malloc_usable_size call. Each thread's counter is on a list (registered at
 * its first counted call, under hk_held_mutex); a thread that exits folds its net count into
 * hk_held_gone (a pthread key's destructor), and so do the other threads in a fork child.
 * Counting starts when the hooks go in: totals compare only within one epoch. */
typedef struct hk_held {
    _Atomic int64_t n; /* written only by its own thread (relaxed load + store: a plain add) */
    struct hk_held *next, *prev;
    int reg;
} hk_held_t;
static __thread hk_held_t hk_held __attribute__((tls_model("initial-exec")));
static pthread_mutex_t hk_held_mutex = PTHREAD_MUTEX_INITIALIZER;
static hk_held_t *hk_held_list;
static int64_t hk_held_gone; /* exited threads' net bytes */
static pthread_key_t hk_held_key;
static int hk_held_key_ok = 0;
static int hk_counting = 0;        /* the counting RAW hooks are the installed ones */
static unsigned long hk_held_epoch; /* + 1 each time they are installed */

static void hk_held_exit(void *arg) {
    hk_held_t *h = arg;
    pthread_mutex_lock(&hk_held_mutex);
    if (h->reg) {
        if (h->prev) h->prev->next = h->next;
        else hk_held_list = h->next;
        if (h->next) h->next->prev = h->prev;
        hk_held_gone += atomic_load_explicit(&h->n, memory_order_relaxed);
        atomic_store_explicit(&h->n, 0, memory_order_relaxed);
        h->reg = 0;
    }
    pthread_mutex_unlock(&hk_held_mutex);
}

static __attribute__((noinline)) void hk_held_register(hk_held_t *h) {
    pthread_mutex_lock(&hk_held_mutex);
    if (!h->reg) {
        h->reg = 1;
        h->prev = NULL;
        h->next = hk_held_list;
        if (h->next) h->next->prev = h;
        hk_held_list = h;
    }
    pthread_mutex_unlock(&hk_held_mutex);
    pthread_setspecific(hk_held_key, h); /* libc's calloc at most: no hook */
}

static inline __attribute__((always_inline)) void hk_held_add(int64_t d) {
    hk_held_t *h = &hk_held;
    atomic_store_explicit(&h->n, atomic_load_explicit(&h->n, memory_order_relaxed) + d, memory_order_relaxed);
    if (__builtin_expect(!h->reg, 0)) hk_held_register(h);
}

/* What a block takes in mallinfo2's in-use bytes: its chunk. Under glibc's own malloc the
 * chunk's size is the word before the block (low 3 bits are flags): one load from the line
 * malloc/free touch anyway, where malloc_usable_size is a call that also reads the *next*
 * chunk's header (an L1 miss more per call, measured). Any other malloc (a preloaded
 * allocator, AddressSanitizer) is asked through malloc_usable_size. */
static int hk_glibc_chunks = 0;
static inline size_t hk_header(void *p) { return *(const size_t *)((uintptr_t)p - sizeof(size_t)); }
static inline int64_t hk_chunk(void *p) {
    if (__builtin_expect(hk_glibc_chunks, 1)) return (int64_t)(hk_header(p) & ~(size_t)7);
    return (int64_t)malloc_usable_size(p) + (int64_t)sizeof(size_t);
}
#define HK_CHUNK(p) hk_chunk(p)

/* glibc's malloc is the one in use, and its chunk headers read as expected. */
static int hk_glibc_detect(void) {
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    if (libc == NULL) return 0;
    int same = dlsym(libc, "malloc") == dlsym(RTLD_DEFAULT, "malloc") &&
               dlsym(libc, "free") == dlsym(RTLD_DEFAULT, "free") && dlsym(libc, "mallinfo2") != NULL;
    dlclose(libc);
    if (!same) return 0;
    static const size_t sizes[] = {1, 24, 100, 1000, 5000, 300000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = malloc(sizes[i]);
        if (p == NULL) return 0;
        size_t hdr = hk_header(p), chunk = hdr & ~(size_t)7, usable = malloc_usable_size(p);
        int ok = (hdr & 2) ? chunk == usable + 2 * sizeof(size_t) : chunk == usable + sizeof(size_t);
        free(p);
        if (!ok) return 0;
    }
    return 1;
}

static int64_t hk_held_total(void) {
    pthread_mutex_lock(&hk_held_mutex);
    int64_t s = hk_held_gone;
    for (hk_held_t *h = hk_held_list; h != NULL; h = h->next) s += atomic_load_explicit(&h->n, memory_order_relaxed);
    pthread_mutex_unlock(&hk_held_mutex);
    return s;
}

static void hk_held_prepare(void) { pthread_mutex_lock(&hk_held_mutex); }
static void hk_held_parent(void) { pthread_mutex_unlock(&hk_held_mutex); }
static void hk_held_child(void) { /* the other threads are gone; their TLS is still mapped */
    pthread_mutex_init(&hk_held_mutex, NULL);
    hk_held_t *me = &hk_held;
    for (hk_held_t *h = hk_held_list; h != NULL; h = h->next)
        if (h != me) hk_held_gone += atomic_load_explicit(&h->n, memory_order_relaxed);
    hk_held_list = NULL;
    if (me->reg) {
        me->prev = me->next = NULL;
        hk_held_list = me;
    }
}

static int hk_held_init(void) {
    if (hk_held_key_ok) return 0;
    hk_glibc_chunks = hk_glibc_detect();
    if (pthread_key_create(&hk_held_key, hk_held_exit) != 0) return -1;
    if (pthread_atfork(hk_held_prepare, hk_held_parent, hk_held_child) != 0) return -1; /* key kept: harmless */
    hk_held_key_ok = 1;
    return 0;
}

/* The RAW hooks above, counting (installed over plain pymalloc without the shim), each
 * one flat function: the allocator's call, the count, the guard and the countdown inline
 * (a nested hook call, its frame and the reloads cost ~15 instructions per raw call). */
static __attribute__((noinline)) void *hk_raw_crossed(void *p, size_t size) {
    if (hp_crossed(&hp_tls, size)) hk_sampled(p, size, &hk_ctx[0]);
    return p;
}

/* After the allocator returned `p` (not NULL): 1 when the countdown crossed. */
static inline __attribute__((always_inline)) int hk_raw_count(size_t size) {
    hp_tls_t *t = &hp_tls;
    if (t->guard) return 0;
    int64_t left = t->countdown - (int64_t)size;
    if (__builtin_expect(left > 0, 1)) {
        t->countdown = left;
        return 0;
    }
    return 1;
}

/* The counting bodies, for the hooks below with and without the preload shim: `mask` is a
 * constant in each, so each hook is still one flat function. Under the shim (memdiag run)
 * Python's own calls to malloc are masked from it (they are Python's, counted here), so
 * that native bytes are still malloc's in use less Python's, exactly. Without this count,
 * a native verdict under the shim subtracted a sampled Python heap, and none came while
 * Python memory grew beside a leak. Only the shim's guard is touched (a TLS add). */
static inline __attribute__((always_inline)) void *hk_malloc_counted(size_t size, int mask) {
    if (mask) hk_shim_mask(1);
    void *p = hk_ctx[0].orig.malloc(hk_ctx[0].orig.ctx, size);
    if (mask) hk_shim_mask(-1);
    if (__builtin_expect(p == NULL, 0)) return p;
    hk_held_add(HK_CHUNK(p));
    if (__builtin_expect(hk_raw_count(size), 0)) return hk_raw_crossed(p, size);
    return p;
}

static inline __attribute__((always_inline)) void *hk_calloc_counted(void *ctx, size_t nelem, size_t elsize,
                                                                     int mask) {
    if (mask) hk_shim_mask(1);
    void *p = hk_raw_calloc(ctx, nelem, elsize);
    if (mask) hk_shim_mask(-1);
    if (p != NULL) hk_held_add(HK_CHUNK(p));
    return p;
}

static inline __attribute__((always_inline)) void *hk_realloc_counted(void *ptr, size_t size, int mask) {
    int64_t old = 0;
    if (ptr != NULL) {
        hp_untrack(ptr);
        old = HK_CHUNK(ptr);
    }
    if (mask) hk_shim_mask(1);
    void *p = hk_ctx[0].orig.realloc(hk_ctx[0].orig.ctx, ptr, size);
    if (mask) hk_shim_mask(-1);
    if (__builtin_expect(p == NULL, 0)) return p; /* failed: the block is unchanged */
    hk_held_add(HK_CHUNK(p) - old);
    if (__builtin_expect(hk_raw_count(size), 0)) return hk_raw_crossed(p, size);
    return p;
}

static HK_HOT void *hk_malloc_rawc(void *ctx, size_t size) {
    (void)ctx;
    return hk_malloc_counted(size, 0);
}

static void *hk_calloc_rawc(void *ctx, size_t nelem, size_t elsize) { return hk_calloc_counted(ctx, nelem, elsize, 0); }

static HK_HOT void *hk_realloc_rawc(void *ctx, void *ptr, size_t size) {
    (void)ctx;
    return hk_realloc_counted(ptr, size, 0);
}

/* Both with and without the shim: free is not masked (the shim untracks its own blocks). */
static HK_HOT void hk_free_rawc(void *ctx, void *ptr) {
    (void)ctx;
    if (ptr != NULL) {
        hk_held_add(-HK_CHUNK(ptr));
        if (__builtin_expect(hp_maybe_sampled(ptr), 0)) hp_untrack_slow(ptr);
    }
    hk_ctx[0].orig.free(hk_ctx[0].orig.ctx, ptr);
}

static void *hk_malloc_rawcm(void *ctx, size_t size) {
    (void)ctx;
    return hk_malloc_counted(size, 1);
}

static void *hk_calloc_rawcm(void *ctx, size_t nelem, size_t elsize) { return hk_calloc_counted(ctx, nelem, elsize, 1); }

static void *hk_realloc_rawcm(void *ctx, void *ptr, size_t size) {
    (void)ctx;
    return hk_realloc_counted(ptr, size, 1);
}

static int hk_ours_on_top(int i) {
    PyMemAllocatorEx cur;
    PyMem_GetAllocator(hk_domains[i], &cur);
    return cur.ctx == hk_hooks[i].ctx && cur.malloc == hk_hooks[i].malloc;
}

/* ---------------------------------------------------------------- Python API */
/* Called by the preload shim, on this thread, without the GIL: see hp_hand_over_stack. */
static void hk_want_stack(void) {
    if (!hp_tls.want_stack) hp_tls.resume = hp_tls.countdown; /* resumed unless it crosses (hp_crossed) */
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
        const char *(*name)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "_PyMem_GetCurrentAllocatorName");
        const char *nm = name != NULL ? name() : NULL;
        int pymalloc = nm != NULL && strcmp(nm, "pymalloc") == 0;
        int reroute = pymalloc && hk_shim_mask == NULL;
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
        hk_hot.fast_max = reroute ? HK_PYMALLOC_MAX : HK_NO_NESTING;
        if (hk_shim_mask == NULL) { /* the specialised fast paths (hk_ctx[i] is domain i) */
            hk_hooks[0].malloc = hk_malloc_raw;
            hk_hooks[0].free = hk_free_raw;
            hk_hooks[1].malloc = hk_malloc_mem;
            hk_hooks[1].calloc = hk_calloc_mem;
            hk_hooks[1].realloc = reroute ? hk_realloc_mem : hk_realloc_guarded_mem;
            hk_hooks[1].free = hk_free_mem;
            hk_hooks[2].malloc = hk_malloc_obj;
            hk_hooks[2].calloc = hk_calloc_obj;
            hk_hooks[2].realloc = reroute ? hk_realloc_obj : hk_realloc_guarded_obj;
            hk_hooks[2].free = hk_free_obj;
            /* their context is the allocator's, passed through (they read hk_ctx[i] for the rest) */
            for (int i = 1; i < 3; i++) {
                hk_hooks[i].ctx = hk_ctx[i].orig.ctx;
                hk_hot.malloc[i - 1] = hk_ctx[i].orig.malloc;
                hk_hot.calloc[i - 1] = hk_ctx[i].orig.calloc;
                hk_hot.realloc[i - 1] = hk_ctx[i].orig.realloc;
            }
        }
        for (int i = 1; i < 3; i++) {
            hk_ctx[i].reroute = reroute;
            if (reroute) { /* pymalloc's own free, with its own ctx (our MEM/OBJ hooks ignore ctx) */
                hk_hooks[i].ctx = hk_ctx[i].orig.ctx;
                hk_hooks[i].free = hk_ctx[i].orig.free;
            }
        }
        /* over plain pymalloc: Python's bytes from malloc counted by the RAW hooks (masked
         * from the preload shim under memdiag run) */
        hk_counting = 0;
        if (pymalloc && hk_held_init() == 0) {
            int shim = hk_shim_mask != NULL;
            hk_hooks[0].malloc = shim ? hk_malloc_rawcm : hk_malloc_rawc;
            hk_hooks[0].calloc = shim ? hk_calloc_rawcm : hk_calloc_rawc;
            hk_hooks[0].realloc = shim ? hk_realloc_rawcm : hk_realloc_rawc;
            hk_hooks[0].free = hk_free_rawc;
            hk_counting = 1;
            hk_held_epoch++;
        }
        /* RAW may be called by threads without the GIL: the hook is complete before it is
         * published, and the original stays valid for calls still in flight. */
        for (int i = 0; i < 3; i++) PyMem_SetAllocator(hk_domains[i], &hk_hooks[i]);
        hk_chained = 1;
    }
    atomic_fetch_add(&hp_gen, 1); /* every thread redraws its countdown */
    atomic_store(&hk_hot.left, 0); /* the GIL's: at the next allocation, with this interval */
    atomic_store(&hp_enabled, 1);
    Py_RETURN_NONE;
}

static PyObject *hp_py_stop(PyObject *self, PyObject *noargs) {
    atomic_store(&hp_enabled, 0);
    if (hk_chained && hk_ours_on_top(0) && hk_ours_on_top(1) && hk_ours_on_top(2)) {
        for (int i = 0; i < 3; i++) PyMem_SetAllocator(hk_domains[i], &hk_ctx[i].orig);
        hk_chained = 0;
        hk_counting = 0;
    }
    /* Frees of blocks sampled before stop() may still come through a hook in flight;
     * the live table stays valid for them. */
    hp_line_release();
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
    hp_line_release();
    return hp_snapshot_tables(names);
}

static PyObject *hp_py_reset(PyObject *self, PyObject *noargs) {
    hp_line_release();
    pthread_mutex_lock(&hp_mutex);
    hp_clear_samples();
    pthread_mutex_unlock(&hp_mutex);
    Py_RETURN_NONE;
}

/* Under hp_mutex: what the profiler's tables take in malloc's in-use figure (their calloc'ed
 * sizes, whatever part of them is written; rerouted blocks are Python's, counted already). */
static size_t hk_tables_malloc_bytes(void) {
    hp_live_table_t *t = atomic_load_explicit(&hp_live, memory_order_relaxed);
    size_t n = (t ? t->cap * (sizeof(uintptr_t) + sizeof(hp_live_t)) : 0) + hp_retired_bytes;
    if (hp_tables_ready)
        n += (size_t)HP_FRAME_CAP_MAX * sizeof(hp_frame_t) + (size_t)hp_frame_index_cap * sizeof(uint32_t) +
             (size_t)hp_pool_cap * sizeof(uint32_t) + (size_t)HP_STACKS_MAX * sizeof(hp_stack_t) +
             (size_t)HP_STACK_CAP_MAX * sizeof(uint32_t);
    if (hp_stack_objs != NULL) n += ((size_t)HP_FRAME_CAP_MAX + HP_STACK_CAP_MAX) * sizeof(PyObject *);
    return n;
}

/* malloc_held() -> None, or (epoch, python_bytes, own_bytes): the net bytes of malloc's
 * in-use figure that Python's blocks took since the counting hooks went in (epoch), and
 * what the profiler's own tables take from libc directly. None: not counted here (another
 * allocator than plain pymalloc, the preload shim, or the hooks are out). */
static PyObject *hp_py_malloc_held(PyObject *self, PyObject *noargs) {
    if (!hk_counting) Py_RETURN_NONE;
    int64_t held = hk_held_total();
    pthread_mutex_lock(&hp_mutex);
    size_t own = hk_tables_malloc_bytes();
    pthread_mutex_unlock(&hp_mutex);
    return Py_BuildValue("(kLK)", hk_held_epoch, (long long)held, (unsigned long long)own);
}

/* sites_of(objects) -> [(count, bytes, frames)]: which of these objects' blocks are sampled
 * and live (how many, their own sizes summed), grouped by the stack that allocated them (frames innermost first, as in
 * snapshot()). A container's entries looked up here name the line that allocated them with
 * certainty once one is sampled, where a line's sampled growth (a few samples a minute for
 * a slow leak) matches the container's rate only roughly. An object's block starts before
 * it by its pre-header: the collector's link (GC types) and the managed dict/weakref slots. */
#define HK_SITES_MAX 64
static PyObject *hp_py_sites_of(PyObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "sites_of expects a sequence of objects");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    uint32_t stack[HK_SITES_MAX];
    double count[HK_SITES_MAX], bytes[HK_SITES_MAX];
    int ns = 0;
    pthread_mutex_lock(&hp_mutex);
    hp_live_table_t *t = hp_tables_ready ? atomic_load_explicit(&hp_live, memory_order_relaxed) : NULL;
    for (Py_ssize_t k = 0; t != NULL && hp_live_n > 0 && k < n; k++) {
        PyTypeObject *tp = Py_TYPE(items[k]);
        uintptr_t pre = PyType_IS_GC(tp) ? 2 * sizeof(uintptr_t) : 0;
#if PY_VERSION_HEX >= 0x030B0000
        if (tp->tp_flags & ((1UL << 4) | (1UL << 3))) pre += 2 * sizeof(PyObject *); /* MANAGED_DICT/WEAKREF */
#endif
        uintptr_t a = (uintptr_t)items[k] - pre;
        size_t mask = t->cap - 1, i = hp_hash_addr(a) & mask;
        for (;;) {
            uintptr_t key = atomic_load_explicit(&t->keys[i], memory_order_relaxed);
            if (key == 0) break;
            if (key == a) {
                hp_live_t *v = &t->vals[i];
                int j = 0;
                while (j < ns && stack[j] != v->stack) j++;
                if (j == ns && ns < HK_SITES_MAX) {
                    stack[ns] = v->stack;
                    count[ns] = bytes[ns] = 0.0;
                    ns++;
                }
                if (j < ns) {
                    count[j] += 1.0;
                    bytes[j] += (double)hp_live_size(v);
                }
                break;
            }
            i = (i + 1) & mask;
        }
    }
    pthread_mutex_unlock(&hp_mutex);
    Py_DECREF(seq);
    if (ns > 0 && hp_obj_caches_init() < 0) return PyErr_NoMemory();
    hp_tls.guard++; /* our own objects are not sampled */
    PyObject *out = PyList_New(0);
    for (int j = 0; out != NULL && j < ns; j++) {
        /* stacks are never removed: read unlocked (see snapshot); their tuples are cached */
        PyObject *frames = hp_stack_obj(stack[j]);
        PyObject *row = frames ? Py_BuildValue("(ddN)", count[j], bytes[j], frames) : NULL;
        if (row == NULL || PyList_Append(out, row) < 0) Py_CLEAR(out);
        Py_XDECREF(row);
    }
    hp_tls.guard--;
    return out;
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
    {"sites_of", hp_py_sites_of, METH_O,
     "sites_of(objects) -> [(count, bytes, frames)]: the sampled live blocks among these objects, by stack"},
    {"malloc_held", hp_py_malloc_held, METH_NOARGS,
     "malloc_held() -> None | (epoch, python_bytes, own_bytes): Python's net bytes from malloc, counted"},
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
