/* memdiag.leaks._preload: an LD_PRELOAD shim sampling malloc/calloc/realloc/free.
 *
 * `memdiag run` preloads it into the command it runs. The same Poisson sampling over
 * bytes as the CPython allocator hooks (_hp_core.h, its own copy of the state); a sample
 * taken by a thread that holds the GIL records the Python stack, so a ctypes or
 * C-extension leak is named at the Python line that called into native code. Blocks
 * that CPython's own allocator asks malloc for are left to the allocator hooks
 * (_heapprof masks this shim around its calls, see memdiag_preload_mask).
 *
 * The shim is loaded into every process of the command, Python or not: every Python
 * symbol it uses is weak, and the Python paths run only where they resolved.
 * dlsym() may allocate before the real allocator is known: those requests are served
 * from a static buffer that free() recognises and ignores.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <frameobject.h>
#if PY_VERSION_HEX >= 0x030B0000
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
#endif

/* Python symbols: weak, NULL outside a Python process. */
#pragma weak PyGILState_Check
#pragma weak PyGILState_GetThisThreadState
#pragma weak Py_IsInitialized
#pragma weak PyCode_Addr2Line
#pragma weak _PyThreadState_UncheckedGet
#if PY_VERSION_HEX >= 0x030D0000
#pragma weak PyThreadState_GetUnchecked
#endif
#pragma weak Py_BuildValue
#pragma weak _Py_BuildValue_SizeT
#pragma weak PyList_New
#pragma weak PyList_Append
#pragma weak PyTuple_New
#pragma weak PyErr_NoMemory
#pragma weak _Py_Dealloc
#pragma weak _Py_NoneStruct
#pragma weak PyFrame_GetCode
#pragma weak PyFrame_GetBack
#pragma weak PyFrame_GetLineNumber
#pragma weak PyThreadState_GetFrame

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);

static char boot_buf[1 << 16];
static size_t boot_used;

static int in_boot(void *p) { return (char *)p >= boot_buf && (char *)p < boot_buf + sizeof boot_buf; }

static void *boot_alloc(size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (boot_used + n > sizeof boot_buf) return NULL;
    void *p = boot_buf + boot_used;
    boot_used += n;
    return p; /* static storage: zeroed */
}

static int resolving;
static void resolve(void) {
    if (real_malloc) return;
    resolving = 1;
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    resolving = 0;
}

static void *hp_real_calloc(size_t n, size_t m) {
    resolve();
    return real_calloc(n, m);
}
static void hp_real_free(void *p) {
    if (p != NULL && !in_boot(p)) real_free(p);
}
#define HP_CALLOC hp_real_calloc
#define HP_FREE hp_real_free
#include "_hp_core.h"

static int py_ready(void) {
    return PyGILState_Check != NULL && Py_IsInitialized != NULL && PyCode_Addr2Line != NULL && Py_IsInitialized();
}

/* At load time, before main(): the tables come from the real calloc. */
__attribute__((constructor)) static void pl_start(void) {
    resolve();
    hp_tls.guard++;
    const char *iv = getenv("MEMDIAG_PRELOAD_INTERVAL");
    unsigned long long v = iv ? strtoull(iv, NULL, 10) : 0;
    if (v >= 1) atomic_store(&hp_interval, (uint64_t)v);
    hp_max_frames = 32;
    pthread_atfork(hp_atfork_prepare, hp_atfork_parent, hp_atfork_child);
    if (hp_tables_init() == 0) atomic_store(&hp_enabled, 1);
    hp_tls.guard--;
}

/* The CPython hooks (memdiag.leaks._heapprof) register how to ask a thread for its stack. */
static void (*pl_want_stack)(void) = NULL;
__attribute__((visibility("default"))) void memdiag_preload_register(void (*want)(void)) { pl_want_stack = want; }

static inline void pl_sampled(void *p, size_t size) {
    hp_tls.guard++;
    /* 2: a stack from this thread's own frames even without the GIL (lookup only) */
    int py = py_ready() && PyGILState_GetThisThreadState != NULL;
    hp_record(p, size, HP_DOMAIN_NATIVE, py ? 2 : 0);
    if (py && pl_want_stack != NULL && !PyGILState_Check()) pl_want_stack(); /* frames for next time */
    hp_tls.guard--;
}

__attribute__((visibility("default"))) void *malloc(size_t size) {
    if (!real_malloc) {
        if (resolving) return boot_alloc(size);
        resolve();
    }
    void *p = real_malloc(size);
    if (!hp_tls.guard && hp_should_sample(size) && p) pl_sampled(p, size);
    return p;
}

__attribute__((visibility("default"))) void *calloc(size_t n, size_t m) {
    if (!real_calloc) {
        if (resolving) return boot_alloc(n * m);
        resolve();
    }
    void *p = real_calloc(n, m);
    if (!hp_tls.guard && hp_should_sample(n * m) && p) pl_sampled(p, n * m);
    return p;
}

__attribute__((visibility("default"))) void *realloc(void *ptr, size_t size) {
    if (in_boot(ptr)) { /* move out of the boot buffer */
        resolve();
        void *q = real_malloc(size);
        size_t room = (size_t)(boot_buf + sizeof boot_buf - (char *)ptr);
        if (q) memcpy(q, ptr, size < room ? size : room);
        return q;
    }
    if (!real_realloc) resolve();
    hp_untrack(ptr);
    void *p = real_realloc(ptr, size);
    if (!hp_tls.guard && hp_should_sample(size) && p) pl_sampled(p, size);
    return p;
}

__attribute__((visibility("default"))) void free(void *ptr) {
    if (ptr == NULL || in_boot(ptr)) return;
    if (!real_free) resolve();
    hp_untrack(ptr);
    real_free(ptr);
}

/* CPython's allocator hooks (_heapprof) call this around their calls into the allocator
 * chain, so that the blocks Python asks malloc for are counted once, as "python". */
__attribute__((visibility("default"))) void memdiag_preload_mask(int delta) { hp_tls.guard += delta; }

/* The CPython hooks hand over every stack they take (GIL held): intern its frames here. */
__attribute__((visibility("default"))) void memdiag_preload_intern(const void *rawp, int n) {
    const hp_raw_frame_t *raw = rawp;
    hp_tls.guard++;
    pthread_mutex_lock(&hp_mutex);
    if (hp_tables_ready)
        for (int k = 0; k < n; k++) hp_intern_frame(raw[k].filename, raw[k].name, raw[k].lineno);
    pthread_mutex_unlock(&hp_mutex);
    hp_tls.guard--;
}

/* (rows, stats) like _heapprof.snapshot(), for the native domain. Call with the GIL held. */
__attribute__((visibility("default"))) PyObject *memdiag_preload_snapshot(void) {
    static const char *names[2] = {"python", "native"};
    return hp_snapshot_tables(names);
}
