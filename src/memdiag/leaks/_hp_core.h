/* Sampled heap profiler core, shared by the CPython allocator hooks (_heapprof.c) and
 * the LD_PRELOAD malloc shim (_preload.c). Each shared object that includes this file
 * gets its own copy of the state (everything here is static).
 *
 * Sampling: a Poisson process over bytes. Each thread counts down a distance drawn
 * from an exponential distribution of mean `interval` bytes; the allocation during
 * which the count crosses zero is sampled and the next distance is drawn afresh. An
 * allocation of `size` bytes is then sampled with probability p = 1 - exp(-size/mean)
 * whatever happened before (memoryless), so weighting it by 1/p (count) and size/p
 * (bytes) makes every total unbiased (tcmalloc's and ddtrace memalloc's weighting).
 *
 * Live heap: sampled blocks are kept in an address table (open addressing, linear
 * probing, backward-shift deletion). Every free must ask "is this address sampled?";
 * that question is answered without a lock (a seqlock: the version is odd while a
 * writer moves entries; a reader that saw it change retries under the lock). Writers
 * (sampling, removal) hold hp_mutex. Tables grow by doubling up to fixed bounds; a grown
 * table's old key array is retired, not freed (a lock-free reader may still read it),
 * so the memory held is bounded by twice the largest table. Samples that find a full
 * table are dropped and counted.
 *
 * Stacks are taken only by a thread that holds the GIL (PyGILState_Check); frames are
 * interned as (filename, function, line) with references held on the two strings.
 * Taking a stack allocates nothing (see hp_capture): no frame object is materialised,
 * so a sample never runs a collection, takes an allocator lock or sets an exception.
 *
 * Fork: prepare takes the lock, the parent releases it, the child re-creates it and
 * forgets the parent's samples (its totals start again from zero).
 */
#ifndef MEMDIAG_HP_CORE_H
#define MEMDIAG_HP_CORE_H

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HP_MAX_FRAMES_LIMIT 128
#define HP_FRAME_CAP_MAX (1u << 16)  /* interned frames */
#define HP_STACK_CAP_MAX (1u << 14)  /* distinct stacks */
#define HP_LIVE_CAP_MAX (1u << 17)   /* address slots: at most half used */
#define HP_LIVE_CAP_MIN (1u << 10)
#define HP_FRAME_INDEX_MIN (1u << 12) /* the frame index starts here and doubles */
#define HP_PAGE 4096u
#define HP_DOMAIN_PYTHON 0
#define HP_DOMAIN_NATIVE 1

/* libc allocation for the profiler's own tables. The preload shim overrides these with
 * the real (next) allocator so its tables never recurse into itself. */
#ifndef HP_CALLOC
#define HP_CALLOC calloc
#define HP_FREE free
#endif

typedef struct {
    int64_t countdown; /* bytes left until the next sample */
    uint64_t rng;
    uint32_t gen;      /* generation of the countdown (a new start() redraws) */
    int guard;         /* re-entrancy: > 0 while this thread is inside the sampler */
    int ignored;       /* memdiag's own threads: never sampled */
    int want_stack;    /* the preload shim missed this thread's frames: hand them over */
    int64_t resume;    /* the countdown a forced hand-over interrupted (see hp_crossed) */
    int rerouted;      /* the block being recorded was served by the raw allocator for us */
} hp_tls_t;

/* initial-exec: one %fs-relative access instead of a __tls_get_addr call per allocation
 * (callgrind: a quarter of the hooks' cost). A dlopen'ed module takes it from glibc's
 * static TLS surplus; if that were exhausted the import fails and memdiag falls back. */
static __thread hp_tls_t hp_tls __attribute__((tls_model("initial-exec")));

typedef struct {
    PyObject *filename; /* strong references (NULL for the synthetic frames) */
    PyObject *name;
    const char *cname;  /* synthetic frames: a C string */
    int lineno;
} hp_frame_t;

typedef struct {
    uint32_t first;  /* index in hp_frame_pool */
    uint16_t nframes;
    uint8_t domain;
    uint8_t used;
    uint64_t hash;
    double alloc_bytes, alloc_count, live_bytes, live_count;
} hp_stack_t;

typedef struct {
    uint32_t stack;
    float weight; /* 1 / p */
    uint64_t size; /* | HP_SIZE_REROUTED: a small block the raw allocator serves (see _heapprof.c) */
} hp_live_t;
#define HP_SIZE_REROUTED (1ULL << 63)
#define HP_REROUTED_BYTES 529u /* what a rerouted block takes at most: 513 bytes + malloc's header */
static inline uint64_t hp_live_size(const hp_live_t *v) { return v->size & ~HP_SIZE_REROUTED; }
#define HP_REROUTED_MAX 16384u /* live rerouted blocks at most: 8.7 MB */
static _Atomic size_t hp_rerouted_n; /* live rerouted blocks (written under hp_mutex) */

typedef struct {
    _Atomic(uintptr_t) *keys;
    hp_live_t *vals;
    size_t cap;
} hp_live_table_t;

typedef struct hp_retired {
    struct hp_retired *next;
    void *mem;
    size_t bytes;
} hp_retired_t;

static pthread_mutex_t hp_mutex = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t hp_interval = 512 * 1024;
static _Atomic uint32_t hp_gen = 1;
static _Atomic int hp_enabled = 0;
static int hp_max_frames = 32;

/* The dense arrays (frames, stacks, the frame pool) are calloc'd at their bound but filled
 * from the front: the pages never written stay untouched (not resident), so what they cost
 * is what they hold. The two hash indexes are written at random places: the frame index
 * starts small and doubles, the stack index is 64 KiB. */
static hp_frame_t *hp_frames;       /* [HP_FRAME_CAP_MAX], dense, in interning order */
static uint32_t hp_nframes;
static uint32_t *hp_frame_index;    /* open addressing over frames: id + 1, 0 = empty */
static uint32_t hp_frame_index_cap; /* HP_FRAME_INDEX_MIN .. 2 * HP_FRAME_CAP_MAX, at most half used */
static uint32_t *hp_frame_pool;     /* stack frames, concatenated */
static uint32_t hp_pool_used;
static uint32_t hp_pool_cap;
static hp_stack_t *hp_stacks;       /* [HP_STACK_CAP_MAX / 4 * 3], dense (0: the overflow stack) */
static uint32_t *hp_stack_index;    /* [HP_STACK_CAP_MAX], open addressing by hash: id + 1, 0 = empty */
static uint32_t hp_nstacks;

static _Atomic(hp_live_table_t *) hp_live;
static hp_live_table_t hp_live_tables[2]; /* the current one and its successor's slot */
static int hp_live_which;
static size_t hp_live_n;
static _Atomic unsigned hp_live_version;
/* A bit filter in front of the address table: free() reads one bit to learn that a block
 * was certainly not sampled (the table probe costs several loads and a seqlock). One bit
 * per 16-byte granule of a 1 MiB window (every block pymalloc or malloc returns is
 * 16-aligned), so blocks close in memory share a filter line: the 8 KiB of bits stay in
 * L1 along with the application's own data (a 64 KiB byte filter indexed by a mixing hash
 * cost a cache miss on most frees). The bit is set while the slot's count (hp_filter_n,
 * written only under hp_mutex, saturating at 255) is not zero. */
#define HP_FILTER_BITS 16
#define HP_FILTER_SHIFT 4
static _Atomic uint64_t hp_filter[(1u << HP_FILTER_BITS) / 64];
static uint8_t hp_filter_n[1u << HP_FILTER_BITS];
static inline size_t hp_filter_slot(uintptr_t a) {
    return (size_t)(a >> HP_FILTER_SHIFT) & ((1u << HP_FILTER_BITS) - 1);
}
/* Under hp_mutex: one more (+1) or one fewer (-1) sampled block in `a`'s slot. */
static inline void hp_filter_add(uintptr_t a, int delta) {
    size_t s = hp_filter_slot(a);
    uint8_t n = hp_filter_n[s];
    if (n == 255) return; /* saturated: the slot always asks the table */
    if (delta > 0) {
        hp_filter_n[s] = (uint8_t)(n + 1);
        if (n == 0) atomic_fetch_or_explicit(&hp_filter[s >> 6], 1ULL << (s & 63), memory_order_release);
    } else if (n > 0) {
        hp_filter_n[s] = (uint8_t)(n - 1);
        if (n == 1) atomic_fetch_and_explicit(&hp_filter[s >> 6], ~(1ULL << (s & 63)), memory_order_release);
    }
}
static hp_retired_t *hp_retired;
static size_t hp_retired_bytes;

#define HP_IGNORED_THREADS_MAX 64
static pthread_t hp_ignored_threads[HP_IGNORED_THREADS_MAX]; /* memdiag's threads, by name */
static int hp_n_ignored_threads;

static uint64_t hp_dropped;        /* samples not tracked live (table full) */
static uint64_t hp_dropped_stacks; /* samples folded into the overflow stack */
static uint64_t hp_samples;        /* samples taken */
static int hp_tables_ready;

/* ---------------------------------------------------------------- random numbers */
static inline uint64_t hp_next_rand(hp_tls_t *t) {
    uint64_t x = t->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static _Atomic uint64_t hp_seed_counter = 0x9E3779B97F4A7C15ULL;

static int64_t hp_draw(hp_tls_t *t) {
    if (t->rng == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t s = atomic_fetch_add(&hp_seed_counter, 0x9E3779B97F4A7C15ULL);
        t->rng = (s ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)(uintptr_t)t << 16)) | 1;
    }
    /* u in (0, 1]: 53 random bits */
    double u = ((double)(hp_next_rand(t) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double d = -log(u) * (double)atomic_load_explicit(&hp_interval, memory_order_relaxed);
    if (d < 1.0) d = 1.0;
    if (d > 4.0e18) d = 4.0e18;
    return (int64_t)d;
}

/* ---------------------------------------------------------------- address table */
static inline size_t hp_hash_addr(uintptr_t a) {
    uint64_t x = (uint64_t)a;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static int hp_live_alloc(hp_live_table_t *t, size_t cap) {
    t->keys = HP_CALLOC(cap, sizeof(uintptr_t));
    t->vals = HP_CALLOC(cap, sizeof(hp_live_t));
    if (!t->keys || !t->vals) {
        HP_FREE((void *)t->keys);
        HP_FREE(t->vals);
        t->keys = NULL;
        t->vals = NULL;
        return -1;
    }
    t->cap = cap;
    return 0;
}

/* Lock-free: 0 = certainly not sampled; 1 = maybe (ask under the lock). */
static inline int hp_live_maybe(uintptr_t a) {
    for (;;) {
        unsigned v1 = atomic_load_explicit(&hp_live_version, memory_order_acquire);
        if (v1 & 1u) return 1;
        hp_live_table_t *t = atomic_load_explicit(&hp_live, memory_order_acquire);
        if (t == NULL) return 0;
        size_t mask = t->cap - 1, i = hp_hash_addr(a) & mask;
        int found = 0;
        for (;;) {
            uintptr_t k = atomic_load_explicit(&t->keys[i], memory_order_relaxed);
            if (k == a) {
                found = 1;
                break;
            }
            if (k == 0) break;
            i = (i + 1) & mask;
        }
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&hp_live_version, memory_order_relaxed) == v1) return found;
    }
}

static inline void hp_version_begin(void) {
    atomic_fetch_add_explicit(&hp_live_version, 1, memory_order_acq_rel);
    atomic_thread_fence(memory_order_release);
}
static inline void hp_version_end(void) { atomic_fetch_add_explicit(&hp_live_version, 1, memory_order_release); }

/* Under hp_mutex. */
static void hp_live_insert_into(hp_live_table_t *t, uintptr_t a, const hp_live_t *v) {
    size_t mask = t->cap - 1, i = hp_hash_addr(a) & mask;
    for (;;) {
        uintptr_t k = atomic_load_explicit(&t->keys[i], memory_order_relaxed);
        if (k == 0 || k == a) break;
        i = (i + 1) & mask;
    }
    t->vals[i] = *v;
    atomic_store_explicit(&t->keys[i], a, memory_order_release);
}

static void hp_retire(void *mem, size_t bytes) {
    hp_retired_t *r = HP_CALLOC(1, sizeof(*r));
    if (r == NULL) return; /* leak it rather than free memory a reader may hold */
    r->mem = mem;
    r->bytes = bytes;
    r->next = hp_retired;
    hp_retired = r;
    hp_retired_bytes += bytes + sizeof(*r);
}

/* Under hp_mutex: make room for one more entry; -1 when at the bound. */
static int hp_live_reserve(void) {
    hp_live_table_t *cur = atomic_load_explicit(&hp_live, memory_order_relaxed);
    if (cur == NULL) return -1;
    if ((hp_live_n + 1) * 2 <= cur->cap) return 0;
    if (cur->cap >= HP_LIVE_CAP_MAX) return -1;
    hp_live_table_t *nt = &hp_live_tables[hp_live_which ^ 1];
    if (hp_live_alloc(nt, cur->cap * 2) < 0) return -1;
    for (size_t i = 0; i < cur->cap; i++) {
        uintptr_t k = atomic_load_explicit(&cur->keys[i], memory_order_relaxed);
        if (k) hp_live_insert_into(nt, k, &cur->vals[i]);
    }
    hp_version_begin();
    atomic_store_explicit(&hp_live, nt, memory_order_release);
    hp_version_end();
    /* A reader may still be probing the old keys: retire them, free the values. */
    hp_retire((void *)cur->keys, cur->cap * sizeof(uintptr_t));
    HP_FREE(cur->vals);
    cur->keys = NULL;
    cur->vals = NULL;
    hp_live_which ^= 1;
    return 0;
}

/* Under hp_mutex: remove `a`, returning its entry; 0 if absent. */
static int hp_live_remove(uintptr_t a, hp_live_t *out) {
    hp_live_table_t *t = atomic_load_explicit(&hp_live, memory_order_relaxed);
    if (t == NULL) return 0;
    size_t mask = t->cap - 1, i = hp_hash_addr(a) & mask;
    for (;;) {
        uintptr_t k = atomic_load_explicit(&t->keys[i], memory_order_relaxed);
        if (k == 0) return 0;
        if (k == a) break;
        i = (i + 1) & mask;
    }
    *out = t->vals[i];
    if (out->size & HP_SIZE_REROUTED) atomic_fetch_sub_explicit(&hp_rerouted_n, 1, memory_order_relaxed);
    hp_version_begin();
    /* backward-shift deletion */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        uintptr_t k = atomic_load_explicit(&t->keys[j], memory_order_relaxed);
        if (k == 0) break;
        size_t h = hp_hash_addr(k) & mask;
        /* can k move to i? only if its home h is not cyclically within (i, j] */
        if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
            t->vals[i] = t->vals[j];
            atomic_store_explicit(&t->keys[i], k, memory_order_relaxed);
            i = j;
        }
    }
    atomic_store_explicit(&t->keys[i], 0, memory_order_relaxed);
    hp_version_end();
    hp_filter_add(a, -1);
    hp_live_n--;
    return 1;
}

/* ---------------------------------------------------------------- frames and stacks */
static inline uint64_t hp_mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    return h;
}

/* Under hp_mutex. Frame 0 = "<no Python frame>", 1 = "<profiler tables full>". */
static inline uint32_t hp_frame_hash(PyObject *filename, PyObject *name, int lineno) {
    return (uint32_t)hp_mix(hp_mix(hp_mix(0, (uintptr_t)filename), (uintptr_t)name), (uint64_t)(uint32_t)lineno);
}

/* Under hp_mutex: double the frame index (every reader holds the lock: the old one is
 * freed at once). -1 when out of memory (the old index stays in use). */
static int hp_frame_index_grow(void) {
    uint32_t cap = hp_frame_index_cap * 2, mask = cap - 1;
    uint32_t *idx = HP_CALLOC(cap, sizeof(uint32_t));
    if (idx == NULL) return -1;
    for (uint32_t id = 0; id < hp_nframes; id++) {
        hp_frame_t *f = &hp_frames[id];
        if (f->cname != NULL) continue; /* the synthetic frames are never looked up */
        uint32_t i = hp_frame_hash(f->filename, f->name, f->lineno) & mask;
        while (idx[i] != 0) i = (i + 1) & mask;
        idx[i] = id + 1;
    }
    HP_FREE(hp_frame_index);
    hp_frame_index = idx;
    hp_frame_index_cap = cap;
    return 0;
}

static uint32_t hp_intern_frame(PyObject *filename, PyObject *name, int lineno) {
    if ((hp_nframes + 1) * 2 > hp_frame_index_cap && hp_frame_index_cap < 2 * HP_FRAME_CAP_MAX &&
        hp_frame_index_grow() < 0 && (hp_nframes + 1) * 4 > hp_frame_index_cap * 3)
        return 1; /* no memory for a larger index and this one is 3/4 full */
    uint32_t h = hp_frame_hash(filename, name, lineno);
    uint32_t mask = hp_frame_index_cap - 1, i = h & mask;
    for (;;) {
        uint32_t id1 = hp_frame_index[i];
        if (id1 == 0) break;
        hp_frame_t *f = &hp_frames[id1 - 1];
        if (f->filename == filename && f->name == name && f->lineno == lineno) return id1 - 1;
        i = (i + 1) & mask;
    }
    if (hp_nframes >= HP_FRAME_CAP_MAX) return 1;
    hp_frame_t *f = &hp_frames[hp_nframes];
    Py_XINCREF(filename);
    Py_XINCREF(name);
    f->filename = filename;
    f->name = name;
    f->cname = NULL;
    f->lineno = lineno;
    hp_frame_index[i] = ++hp_nframes;
    return hp_nframes - 1;
}

/* Under hp_mutex, without the GIL: the frame's id if already interned, else frame 2.
 * Compares pointers only; never touches a reference count. */
static uint32_t hp_lookup_frame(PyObject *filename, PyObject *name, int lineno) {
    uint32_t mask = hp_frame_index_cap - 1, i = hp_frame_hash(filename, name, lineno) & mask;
    for (;;) {
        uint32_t id1 = hp_frame_index[i];
        if (id1 == 0) return 2;
        hp_frame_t *f = &hp_frames[id1 - 1];
        if (f->filename == filename && f->name == name && f->lineno == lineno) return id1 - 1;
        i = (i + 1) & mask;
    }
}

/* Called (GIL held) with every stack the CPython hooks take: the preload shim interns
 * those frames too, so that its samples taken without the GIL (ctypes releases it around
 * foreign calls) can still name them. */
static void (*hp_intern_hook)(const void *raw, int n) = NULL;

#define HP_OVERFLOW_STACK 0u

/* Under hp_mutex: the stack's index, interned. */
static uint32_t hp_intern_stack(const uint32_t *ids, int n, int domain) {
    uint64_t h = hp_mix(0x51ED27u, (uint64_t)domain);
    for (int k = 0; k < n; k++) h = hp_mix(h, ids[k]);
    uint32_t mask = HP_STACK_CAP_MAX - 1, i = (uint32_t)h & mask;
    for (;;) {
        uint32_t id1 = hp_stack_index[i];
        if (id1 == 0) break;
        hp_stack_t *s = &hp_stacks[id1 - 1];
        if (s->hash == h && s->nframes == n && s->domain == domain &&
            memcmp(&hp_frame_pool[s->first], ids, (size_t)n * sizeof(uint32_t)) == 0)
            return id1 - 1;
        i = (i + 1) & mask;
    }
    /* keep the stack index at most 3/4 full, and the pool bounded */
    if (hp_nstacks + 1 >= HP_STACK_CAP_MAX / 4 * 3 || hp_pool_used + (uint32_t)n > hp_pool_cap) {
        hp_dropped_stacks++;
        return HP_OVERFLOW_STACK;
    }
    uint32_t id = hp_nstacks;
    hp_stack_t *s = &hp_stacks[id];
    memset(s, 0, sizeof(*s));
    s->used = 1;
    s->hash = h;
    s->nframes = (uint16_t)n;
    s->domain = (uint8_t)domain;
    s->first = hp_pool_used;
    memcpy(&hp_frame_pool[hp_pool_used], ids, (size_t)n * sizeof(uint32_t));
    hp_pool_used += (uint32_t)n;
    hp_stack_index[i] = id + 1;
    hp_nstacks++;
    return id;
}

typedef struct {
    PyObject *filename, *name;
    int lineno;
} hp_raw_frame_t;

/* With the GIL held: up to `max` frames of the current thread, innermost first.
 * Borrowed pointers; the code objects stay alive because their frames are alive.
 *
 * Nothing here may allocate: this runs inside an allocator call, possibly under a lock
 * that the allocator chain itself takes (tracemalloc calls PyMem_RawMalloc while it holds
 * its tables lock; materialising a frame object there deadlocks on that lock). So on
 * 3.11+ the interpreter's own frames are read, as Modules/_tracemalloc.c does; on 3.10
 * every frame already is a frame object and the public API returns it without allocating.
 */
#if PY_VERSION_HEX >= 0x030B0000
/* `ts` is the calling thread's own state: its frames cannot change while it is in here,
 * with or without the GIL (only the thread itself pushes and pops them). */
/* A frame's line: PyCode_Addr2Line walks the code's line table from its start (~5 000
 * instructions per frame on a service's functions, callgrind: 85 % of a sample's cost). The
 * CPython hooks (HP_LINE_CACHE defined: a thread that holds the GIL, which serialises the
 * cache) keep the answers in a direct-mapped cache keyed by (code object, instruction
 * offset): a code's line table never changes, and the cache holds a reference to each code
 * it names, so an address cannot be reused by another code while it is cached. An evicted
 * code whose reference is not the last one is released at once (no deallocation can
 * follow); a last reference is parked (up to HP_LINE_PENDING) and released by
 * hp_line_release (snapshot, stop, reset: outside any allocator call, where a code's
 * deallocation may run what it likes); with the park full, the slot keeps its entry. The
 * LD_PRELOAD shim (no GIL, no reference counts) reads the table every time. */
#if defined(HP_LINE_CACHE) && !defined(Py_GIL_DISABLED)
#define HP_LINE_CACHED 1
#define HP_LINE_SLOTS 1024u
#define HP_LINE_PENDING 256u
typedef struct {
    PyCodeObject *code; /* a strong reference */
    int addr, line;
} hp_line_slot_t;
static hp_line_slot_t hp_lines[HP_LINE_SLOTS];
static PyObject *hp_line_pending[HP_LINE_PENDING];
static unsigned hp_line_npending;
#define HP_LINE_CACHE_BYTES (sizeof hp_lines + sizeof hp_line_pending)

static int hp_line_of(PyCodeObject *code, int addr) {
    uintptr_t k = ((uintptr_t)code >> 4) ^ ((uintptr_t)(unsigned)addr * 0x9E3779B1u);
    hp_line_slot_t *s = &hp_lines[(k ^ (k >> 10)) & (HP_LINE_SLOTS - 1)];
    if (s->code == code && s->addr == addr) return s->line;
    int line = PyCode_Addr2Line(code, addr);
    PyCodeObject *old = s->code;
    if (old != code) {
        if (old != NULL) {
            if (Py_REFCNT(old) > 1) Py_DECREF(old); /* not the last: no deallocation here */
            else if (hp_line_npending < HP_LINE_PENDING) hp_line_pending[hp_line_npending++] = (PyObject *)old;
            else return line; /* the park is full: keep the slot as it is */
        }
        Py_INCREF(code);
        s->code = code;
    }
    s->addr = addr;
    s->line = line;
    return line;
}

/* GIL held, outside any allocator call: release the codes evicted with their last reference
 * (a deallocation may allocate and sample, and so park more: popped in turn). */
static void hp_line_release(void) {
    while (hp_line_npending > 0) {
        PyObject *o = hp_line_pending[--hp_line_npending];
        Py_DECREF(o);
    }
}
#else
#define HP_LINE_CACHED 0
#define HP_LINE_CACHE_BYTES 0
static inline int hp_line_of(PyCodeObject *code, int addr) { return PyCode_Addr2Line(code, addr); }
static inline void hp_line_release(void) {}
#endif

static int hp_capture_ts(PyThreadState *ts, hp_raw_frame_t *out, int max, int cached) {
    if (ts == NULL) return 0;
#if PY_VERSION_HEX >= 0x030C0000
    if (ts->interp != PyInterpreterState_Main()) cached = 0; /* another interpreter may have its own GIL */
#endif
    /* the cache is the GIL holder's: `ts` must be this thread's own state (with a
     * subinterpreter, 3.11's PyGILState_Check says yes to every thread) */
    if (cached && ts != PyGILState_GetThisThreadState()) cached = 0;
#if PY_VERSION_HEX >= 0x030D0000
    _PyInterpreterFrame *f = ts->current_frame;
#else
    _PyInterpreterFrame *f = ts->cframe ? ts->cframe->current_frame : NULL;
#endif
    int n = 0;
    for (; f != NULL && n < max; f = f->previous) {
#if PY_VERSION_HEX >= 0x030D0000
        PyObject *exe = f->f_executable;
        if (exe == NULL || !PyCode_Check(exe)) continue;
        PyCodeObject *code = (PyCodeObject *)exe;
#else
        PyCodeObject *code = f->f_code;
        if (code == NULL) continue;
#endif
#if PY_VERSION_HEX >= 0x030C0000
        if (f->owner == FRAME_OWNED_BY_CSTACK) continue;
#endif
        if (_PyFrame_IsIncomplete(f)) continue;
        out[n].filename = code->co_filename;
        out[n].name = code->co_name;
        int addr = _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT);
        out[n].lineno = cached ? hp_line_of(code, addr) : PyCode_Addr2Line(code, addr);
        n++;
    }
    return n;
}

static int hp_capture(hp_raw_frame_t *out, int max) {
#if PY_VERSION_HEX >= 0x030D0000
    return hp_capture_ts(PyThreadState_GetUnchecked(), out, max, HP_LINE_CACHED);
#else
    return hp_capture_ts(_PyThreadState_UncheckedGet(), out, max, HP_LINE_CACHED);
#endif
}
#define HP_HAVE_NOGIL_CAPTURE 1
#else
static int hp_capture(hp_raw_frame_t *out, int max) {
    PyThreadState *ts = _PyThreadState_UncheckedGet();
    if (ts == NULL) return 0;
    PyFrameObject *f = PyThreadState_GetFrame(ts); /* 3.10: an existing object */
    int n = 0;
    while (f != NULL && n < max) {
        PyCodeObject *code = PyFrame_GetCode(f);
        out[n].filename = code->co_filename;
        out[n].name = code->co_name;
        out[n].lineno = PyFrame_GetLineNumber(f);
        n++;
        Py_DECREF(code);
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    Py_XDECREF(f);
    return n;
}
#endif
#ifndef HP_LINE_CACHED /* 3.10: frame objects carry their line */
#define HP_LINE_CACHE_BYTES 0
static inline void hp_line_release(void) {}
#endif

/* ---------------------------------------------------------------- setup / reset */
#define HP_STACKS_MAX (HP_STACK_CAP_MAX / 4 * 3)
static size_t hp_fixed_bytes(void) { /* the tables at their bounds */
    return sizeof hp_filter + sizeof hp_filter_n + HP_LINE_CACHE_BYTES + (size_t)HP_FRAME_CAP_MAX * sizeof(hp_frame_t) + 2u * HP_FRAME_CAP_MAX * sizeof(uint32_t) +
           (size_t)hp_pool_cap * sizeof(uint32_t) + (size_t)HP_STACKS_MAX * sizeof(hp_stack_t) +
           (size_t)HP_STACK_CAP_MAX * sizeof(uint32_t);
}

static inline size_t hp_pages(size_t bytes) { return (bytes + HP_PAGE - 1) / HP_PAGE * HP_PAGE; }

/* What the tables hold now: the filled part of each dense array (whole pages), the indexes
 * (written at random places: all of them), the filter. */
static size_t hp_used_bytes(void) {
    return sizeof hp_filter + sizeof hp_filter_n + HP_LINE_CACHE_BYTES + hp_pages((size_t)hp_nframes * sizeof(hp_frame_t)) +
           (size_t)hp_frame_index_cap * sizeof(uint32_t) + hp_pages((size_t)hp_pool_used * sizeof(uint32_t)) +
           hp_pages((size_t)hp_nstacks * sizeof(hp_stack_t)) + (size_t)HP_STACK_CAP_MAX * sizeof(uint32_t);
}

/* The most the tables can ever hold (the reported bound). */
static size_t hp_bound_bytes(void) {
    size_t live_max = (size_t)HP_LIVE_CAP_MAX * (sizeof(uintptr_t) + sizeof(hp_live_t));
    /* current + every retired key array (a geometric series below the largest) */
    /* plus the rerouted blocks' room, if every live sample were one (see _heapprof.c) */
    /* and the snapshot's object caches (see hp_frame_obj, hp_stack_obj): their pointer
     * arrays and the estimates they add per frame and per stack of at most hp_max_frames */
    size_t caches = (size_t)(HP_FRAME_CAP_MAX + HP_STACK_CAP_MAX) * sizeof(PyObject *) + (size_t)HP_FRAME_CAP_MAX * 96u +
                    (size_t)HP_STACKS_MAX * (40u + 8u * (size_t)hp_max_frames);
    return hp_fixed_bytes() + live_max + (size_t)HP_LIVE_CAP_MAX * sizeof(uintptr_t) +
           (size_t)HP_REROUTED_MAX * HP_REROUTED_BYTES + caches;
}

static size_t hp_overhead_bytes(void) {
    hp_live_table_t *t = atomic_load_explicit(&hp_live, memory_order_relaxed);
    size_t live = t ? t->cap * (sizeof(uintptr_t) + sizeof(hp_live_t)) : 0;
    return (hp_tables_ready ? hp_used_bytes() : 0) + live + hp_retired_bytes +
           atomic_load_explicit(&hp_rerouted_n, memory_order_relaxed) * HP_REROUTED_BYTES;
}

/* With the GIL held, hooks not yet sampling. */
static int hp_tables_init(void) {
    if (hp_tables_ready) return 0;
    hp_pool_cap = HP_STACK_CAP_MAX * 16u;
    hp_frames = HP_CALLOC(HP_FRAME_CAP_MAX, sizeof(hp_frame_t));
    hp_frame_index_cap = HP_FRAME_INDEX_MIN;
    hp_frame_index = HP_CALLOC(hp_frame_index_cap, sizeof(uint32_t));
    hp_frame_pool = HP_CALLOC(hp_pool_cap, sizeof(uint32_t));
    hp_stacks = HP_CALLOC(HP_STACKS_MAX, sizeof(hp_stack_t));
    hp_stack_index = HP_CALLOC(HP_STACK_CAP_MAX, sizeof(uint32_t));
    if (!hp_frames || !hp_frame_index || !hp_frame_pool || !hp_stacks || !hp_stack_index ||
        hp_live_alloc(&hp_live_tables[0], HP_LIVE_CAP_MIN) < 0) {
        HP_FREE(hp_frames);
        HP_FREE(hp_frame_index);
        HP_FREE(hp_frame_pool);
        HP_FREE(hp_stacks);
        HP_FREE(hp_stack_index);
        hp_frames = NULL;
        hp_frame_index = NULL;
        hp_frame_pool = NULL;
        hp_stacks = NULL;
        hp_stack_index = NULL;
        return -1;
    }
    hp_live_which = 0;
    /* synthetic frames 0 and 1 */
    hp_frames[0].cname = "<no Python frame>";
    hp_frames[1].cname = "<profiler tables full>";
    hp_frames[2].cname = "<Python frame not seen with the GIL yet>";
    hp_nframes = 3;
    /* the overflow stack: slot 0, one frame ("tables full") */
    hp_frame_pool[0] = 1;
    hp_pool_used = 1;
    hp_stacks[HP_OVERFLOW_STACK].used = 1;
    hp_stacks[HP_OVERFLOW_STACK].nframes = 1;
    hp_stacks[HP_OVERFLOW_STACK].first = 0;
    hp_nstacks = 1;
    atomic_store_explicit(&hp_live, &hp_live_tables[0], memory_order_release);
    hp_tables_ready = 1;
    return 0;
}

/* Under hp_mutex (or in a fork child): forget every sample, keep interned frames/stacks. */
static void hp_clear_samples(void) {
    if (!hp_tables_ready) return;
    for (uint32_t i = 0; i < hp_nstacks; i++) { /* only the used ones: the rest stays untouched */
        hp_stack_t *s = &hp_stacks[i];
        s->alloc_bytes = s->alloc_count = s->live_bytes = s->live_count = 0.0;
    }
    hp_live_table_t *t = atomic_load_explicit(&hp_live, memory_order_relaxed);
    hp_version_begin();
    for (size_t i = 0; i < t->cap; i++) atomic_store_explicit(&t->keys[i], 0, memory_order_relaxed);
    hp_version_end();
    memset((void *)hp_filter, 0, sizeof hp_filter);
    memset(hp_filter_n, 0, sizeof hp_filter_n);
    hp_live_n = 0;
    atomic_store_explicit(&hp_rerouted_n, 0, memory_order_relaxed);
    hp_dropped = hp_dropped_stacks = hp_samples = 0;
    hp_n_ignored_threads = 0;
}

static void hp_atfork_prepare(void) { pthread_mutex_lock(&hp_mutex); }
static void hp_atfork_parent(void) { pthread_mutex_unlock(&hp_mutex); }
static void hp_atfork_child(void) {
    pthread_mutex_init(&hp_mutex, NULL);
    atomic_store(&hp_live_version, 0);
    hp_clear_samples();
    atomic_fetch_add(&hp_gen, 1);
}

/* ---------------------------------------------------------------- the sampled path */
/* Record a sampled allocation of `size` bytes at `ptr`. The caller has set the guard. */
static void hp_record(void *ptr, size_t size, int domain, int take_stack) {
    hp_raw_frame_t raw[HP_MAX_FRAMES_LIMIT];
    int n = 0, lookup_only = 0;
    if (take_stack && PyGILState_Check()) {
        n = hp_capture(raw, hp_max_frames);
        if (n > 0 && hp_intern_hook != NULL) hp_intern_hook(raw, n);
    }
#ifdef HP_HAVE_NOGIL_CAPTURE
    else if (take_stack == 2) { /* the shim, without the GIL: this thread's own frames */
        n = hp_capture_ts(PyGILState_GetThisThreadState(), raw, hp_max_frames, 0);
        lookup_only = 1;
    }
#endif
    double mean = (double)atomic_load_explicit(&hp_interval, memory_order_relaxed);
    double p = 1.0 - exp(-(double)size / mean);
    if (p <= 0.0) p = (double)size / mean;
    if (p <= 0.0) return;
    double w = 1.0 / p;
    uint32_t ids[HP_MAX_FRAMES_LIMIT];
    pthread_mutex_lock(&hp_mutex);
    if (!hp_tables_ready) {
        pthread_mutex_unlock(&hp_mutex);
        return;
    }
    if (hp_n_ignored_threads) {
        pthread_t me = pthread_self();
        for (int k = 0; k < hp_n_ignored_threads; k++)
            if (pthread_equal(me, hp_ignored_threads[k])) {
                pthread_mutex_unlock(&hp_mutex);
                return;
            }
    }
    if (n == 0) ids[n++] = 0;
    else
        for (int k = 0; k < n; k++)
            ids[k] = lookup_only ? hp_lookup_frame(raw[k].filename, raw[k].name, raw[k].lineno)
                                 : hp_intern_frame(raw[k].filename, raw[k].name, raw[k].lineno);
    uint32_t si = hp_intern_stack(ids, n, domain);
    hp_stack_t *s = &hp_stacks[si];
    s->alloc_bytes += w * (double)size;
    s->alloc_count += w;
    hp_samples++;
    if (ptr != NULL && hp_tls.rerouted < 0) {
        hp_dropped++; /* a small block left to pymalloc: its free is not seen (see _heapprof.c) */
    } else if (ptr != NULL) {
        if (hp_live_reserve() == 0) {
            hp_live_t v = {si, (float)w, size | (hp_tls.rerouted > 0 ? HP_SIZE_REROUTED : 0)};
            if (hp_tls.rerouted > 0) atomic_fetch_add_explicit(&hp_rerouted_n, 1, memory_order_relaxed);
            hp_live_table_t *t = atomic_load_explicit(&hp_live, memory_order_relaxed);
            hp_live_t old;
            if (hp_live_remove((uintptr_t)ptr, &old)) { /* stale entry (free not seen) */
                hp_stacks[old.stack].live_bytes -= (double)old.weight * (double)hp_live_size(&old);
                hp_stacks[old.stack].live_count -= (double)old.weight;
                t = atomic_load_explicit(&hp_live, memory_order_relaxed);
            }
            hp_live_insert_into(t, (uintptr_t)ptr, &v);
            hp_filter_add((uintptr_t)ptr, +1);
            hp_live_n++;
            s->live_bytes += w * (double)size;
            s->live_count += w;
        } else {
            hp_dropped++;
        }
    }
    pthread_mutex_unlock(&hp_mutex);
}

/* A block is being freed (before the underlying free). */
static void hp_untrack_slow(void *ptr);

/* Inlined into every free: 0 when the filter says "not sampled" (one bit read; NULL may
 * say "maybe", the slow path drops it). */
static inline __attribute__((always_inline)) int hp_maybe_sampled(void *ptr) {
    size_t slot = hp_filter_slot((uintptr_t)ptr);
    return (int)((atomic_load_explicit(&hp_filter[slot >> 6], memory_order_acquire) >> (slot & 63)) & 1u);
}

static inline __attribute__((always_inline)) void hp_untrack(void *ptr) {
    if (__builtin_expect(hp_maybe_sampled(ptr), 0)) hp_untrack_slow(ptr);
}

static __attribute__((noinline)) void hp_untrack_slow(void *ptr) {
    if (ptr == NULL || !hp_live_maybe((uintptr_t)ptr)) return;
    hp_live_t old;
    pthread_mutex_lock(&hp_mutex);
    if (hp_live_remove((uintptr_t)ptr, &old)) {
        hp_stack_t *s = &hp_stacks[old.stack];
        s->live_bytes -= (double)old.weight * (double)hp_live_size(&old);
        s->live_count -= (double)old.weight;
        if (s->live_count < 0.5) s->live_bytes = s->live_count = 0.0; /* float residue */
    }
    pthread_mutex_unlock(&hp_mutex);
}

/* The countdown crossed zero: redraw it; 1 when this allocation is to be sampled. */
static void hp_hand_over_stack(hp_tls_t *t);

static __attribute__((noinline)) int hp_crossed(hp_tls_t *t, size_t size) {
    if (t->want_stack) {
        hp_hand_over_stack(t);
        /* The shim forced this crossing to get the stack (hk_want_stack): it is a sample
         * only if the countdown it interrupted crossed too. A sample at a point the shim
         * chose is biased: every native sample made the next Python allocation a sample
         * (a ctypes malloc line under memdiag run showed 20 MB of Python ints, ~30x). */
        int64_t left = t->resume - (int64_t)size;
        if (left > 0) {
            t->countdown = left;
            return 0;
        }
    }
    uint32_t gen = atomic_load_explicit(&hp_gen, memory_order_relaxed);
    int take = (t->gen == gen) && !t->guard && !t->ignored && size > 0 &&
               atomic_load_explicit(&hp_enabled, memory_order_relaxed);
    t->gen = gen;
    t->countdown = hp_draw(t);
    return take;
}

/* The shim asked (see memdiag_preload_register): this thread's next allocation through
 * the CPython hooks (the GIL held, the same frames: typically the object ctypes makes of
 * the foreign call's result) hands its stack to the shim. */
static void hp_hand_over_stack(hp_tls_t *t) {
    t->want_stack = 0;
    if (hp_intern_hook == NULL || t->guard || !PyGILState_Check()) return;
    hp_raw_frame_t raw[HP_MAX_FRAMES_LIMIT];
    t->guard++;
    int n = hp_capture(raw, hp_max_frames);
    if (n > 0) hp_intern_hook(raw, n);
    t->guard--;
}

/* Fast path: count the bytes; 1 when this allocation is to be sampled. */
static inline int hp_should_sample(size_t size) {
    hp_tls_t *t = &hp_tls;
    t->countdown -= (int64_t)size;
    if (__builtin_expect(t->countdown > 0, 1)) return 0;
    return hp_crossed(t, size);
}

/* The mem and object domains' countdown, for the CPython hooks without the preload shim
 * (see _heapprof.c). Those domains are called with the GIL held (the C API requires it:
 * pymalloc itself has no lock), so the GIL serialises one countdown for the whole process:
 * no thread-local access, and an unsigned borrow is the only test (4 instructions). It is
 * the same Poisson process over the bytes of every thread: which thread's bytes cross it
 * does not change any allocation's chance of being sampled. A crossing on a thread that
 * may not be sampled (guard, ignored) redraws without a sample, as hp_crossed does. The
 * accesses are relaxed atomics (plain moves): a caller breaking the GIL rule costs a count,
 * never memory safety. The raw domain (called without the GIL) keeps the thread's own. */
static uint32_t hp_gil_gen;

/* `left`: the GIL's countdown (the user keeps it beside what its fast path reads). */
static __attribute__((noinline)) int hp_crossed_gil(_Atomic uint64_t *left, size_t size) {
    hp_tls_t *t = &hp_tls;
    uint32_t gen = atomic_load_explicit(&hp_gen, memory_order_relaxed);
    int take = hp_gil_gen == gen && !t->guard && !t->ignored && size > 0 &&
               atomic_load_explicit(&hp_enabled, memory_order_relaxed);
    hp_gil_gen = gen;
    atomic_store_explicit(left, (uint64_t)hp_draw(t), memory_order_relaxed);
    return take;
}

/* Count `size` bytes down the GIL's countdown; 1 when it crossed (ask hp_crossed_gil). */
static inline __attribute__((always_inline)) int hp_gil_count(_Atomic uint64_t *left, size_t size) {
    uint64_t l;
    if (__builtin_expect(__builtin_sub_overflow(atomic_load_explicit(left, memory_order_relaxed), (uint64_t)size, &l), 0))
        return 1;
    atomic_store_explicit(left, l, memory_order_relaxed);
    return 0;
}

/* ---------------------------------------------------------------- snapshot (GIL held) */
/* The Python objects a snapshot returns for a frame and for a stack's frames are built
 * once and kept (frames and stacks never change once interned): a snapshot of a large
 * profile (3 000 stacks of ~10 frames) built ~35 000 tuples every heap_snapshot_seconds,
 * and the caller, seeing the same tuple again, can keep what it derived from it. Arrays
 * of pointers indexed by frame and stack id, allocated at the first snapshot (only their
 * touched pages are resident); the objects are counted in overhead_bytes. GIL held. */
static PyObject **hp_frame_objs;  /* [HP_FRAME_CAP_MAX] */
static PyObject **hp_stack_objs;  /* [HP_STACK_CAP_MAX], by dense stack id */
static size_t hp_obj_bytes;       /* the cached objects, estimated (tuples and line numbers) */

static PyObject *hp_frame_obj(uint32_t id) {
    PyObject *o = hp_frame_objs[id];
    if (o == NULL) {
        hp_frame_t *f = &hp_frames[id];
        if (f->cname != NULL) o = Py_BuildValue("(sis)", "", 0, f->cname);
        else o = Py_BuildValue("(OiO)", f->filename ? f->filename : Py_None, f->lineno, f->name ? f->name : Py_None);
        if (o == NULL) return NULL;
        hp_frame_objs[id] = o;
        hp_obj_bytes += 96;
    }
    Py_INCREF(o);
    return o;
}

static PyObject *hp_stack_obj(uint32_t si) {
    PyObject *frames = hp_stack_objs[si];
    if (frames == NULL) {
        hp_stack_t *s = &hp_stacks[si];
        frames = PyTuple_New(s->nframes);
        if (frames == NULL) return NULL;
        for (int k = 0; k < s->nframes; k++) {
            PyObject *fo = hp_frame_obj(hp_frame_pool[s->first + k]);
            if (fo == NULL) {
                Py_DECREF(frames);
                return NULL;
            }
            PyTuple_SET_ITEM(frames, k, fo);
        }
        hp_stack_objs[si] = frames;
        hp_obj_bytes += 40 + 8 * (size_t)s->nframes;
    }
    Py_INCREF(frames);
    return frames;
}

static int hp_obj_caches_init(void) {
    if (hp_stack_objs != NULL) return 0;
    hp_frame_objs = HP_CALLOC(HP_FRAME_CAP_MAX, sizeof(PyObject *));
    hp_stack_objs = HP_CALLOC(HP_STACK_CAP_MAX, sizeof(PyObject *));
    if (hp_frame_objs == NULL || hp_stack_objs == NULL) {
        HP_FREE(hp_frame_objs);
        HP_FREE(hp_stack_objs);
        hp_frame_objs = NULL;
        hp_stack_objs = NULL;
        return -1;
    }
    return 0;
}

typedef struct {
    uint32_t stack;
    double ab, ac, lb, lc;
} hp_snap_row_t;

/* snapshot() -> (rows, stats); rows = [(domain, ((file, line, func), ...), live_b, live_c,
 * alloc_b, alloc_c)] with the innermost frame first. The tables are copied under the lock;
 * the Python objects are built after it is released, with sampling off for this thread. */
static PyObject *hp_snapshot_tables(const char *domain_names[2]) {
    if (!hp_tables_ready) return Py_BuildValue("([]{})");
    if (hp_obj_caches_init() < 0) return PyErr_NoMemory();
    hp_tls.guard++;
    /* room for the stacks there are now (more may come before the lock: copy at most n) */
    pthread_mutex_lock(&hp_mutex);
    uint32_t n = hp_nstacks;
    pthread_mutex_unlock(&hp_mutex);
    hp_snap_row_t *rows = HP_CALLOC(n, sizeof(hp_snap_row_t));
    if (rows == NULL) {
        hp_tls.guard--;
        return PyErr_NoMemory();
    }
    size_t nrows = 0;
    unsigned long long samples, dropped, dropped_stacks, live_n, overhead, bound, nstacks, nframes;
    pthread_mutex_lock(&hp_mutex);
    for (uint32_t i = 0; i < n; i++) {
        hp_stack_t *s = &hp_stacks[i];
        if (!s->used || (s->alloc_count <= 0.0 && s->live_count <= 0.0)) continue;
        rows[nrows++] = (hp_snap_row_t){i, s->alloc_bytes, s->alloc_count, s->live_bytes, s->live_count};
    }
    samples = hp_samples;
    dropped = hp_dropped;
    dropped_stacks = hp_dropped_stacks;
    live_n = hp_live_n;
    overhead = hp_overhead_bytes() + hp_obj_bytes + hp_pages((size_t)hp_nframes * sizeof(PyObject *)) +
               hp_pages((size_t)hp_nstacks * sizeof(PyObject *)); /* the object caches (ids are dense) */
    bound = hp_bound_bytes();
    nstacks = hp_nstacks;
    nframes = hp_nframes;
    pthread_mutex_unlock(&hp_mutex);
    /* Frames and stacks are never removed while the module lives: reading them unlocked
     * is safe (a stack's frames were written before the stack was published under lock). */
    PyObject *list = PyList_New(0);
    for (size_t r = 0; list != NULL && r < nrows; r++) {
        hp_stack_t *s = &hp_stacks[rows[r].stack];
        PyObject *frames = hp_stack_obj(rows[r].stack);
        if (frames == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyObject *row = Py_BuildValue("(sNdddd)", domain_names[s->domain ? 1 : 0], frames, rows[r].lb,
                                      rows[r].lc, rows[r].ab, rows[r].ac);
        if (row == NULL || PyList_Append(list, row) < 0) {
            Py_XDECREF(row);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(row);
    }
    HP_FREE(rows);
    PyObject *res = NULL;
    if (list != NULL)
        res = Py_BuildValue("(N{sKsKsKsKsKsKsKsKsK})", list, "samples", samples, "samples_live", live_n, "dropped",
                            dropped, "dropped_stacks", dropped_stacks, "overhead_bytes", overhead, "bound_bytes",
                            bound, "interval_bytes", (unsigned long long)atomic_load(&hp_interval), "stacks",
                            nstacks, "frames", nframes);
    hp_tls.guard--;
    return res;
}

#endif
