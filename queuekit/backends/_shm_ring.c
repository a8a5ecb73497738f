/* The usual put and get of a shm:// queue, compiled: one item, in a frame of its own, with no
 * wrap-around, no checksum, no waiting for room. Everything else (and every machine this
 * cannot be built on) goes the way _shm_segment.py and shm.py lay out, which this must match
 * word for word: that module checks LAYOUT below against its own at import.
 *
 * Each call returns what it could not do to the Python path instead of doing it: put gives
 * False, get gives None, and nothing in the segment has changed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "the lock-free reads of the other end below rely on x86's ordering of stores"
#endif

#define PUT_MUTEX_AT 128
#define GET_MUTEX_AT 256
#define PUT_AT 512
#define GET_AT 640
#define DATA_AT 4096
#define BATCH 0xFFFFFFFFu

/* The put end: two copies of (tail, items put), the version choosing one, the not-empty
 * word, its sleepers, shutdown. */
typedef struct {
    uint64_t copy[2][2];
    uint64_t version;
    uint64_t not_empty;
    uint32_t sleepers;
    uint32_t shutdown;
} PutEnd;

/* The get end: two copies of (head, items got of the batch frame there, items got, tasks
 * done), the version, the not-full and tasks words, their sleepers. */
typedef struct {
    uint64_t copy[2][4];
    uint64_t version;
    uint64_t not_full;
    uint64_t tasks;
    uint32_t sleepers;
    uint32_t joiners;
} GetEnd;

_Static_assert(sizeof(PutEnd) == 56 && sizeof(GetEnd) == 96, "the layout of _shm_segment.py");
_Static_assert(sizeof(pthread_mutex_t) <= GET_MUTEX_AT - PUT_MUTEX_AT, "room for a mutex");

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

typedef struct {
    PyObject_HEAD
    PyObject *keep; /* what keeps the mapping alive */
    char *base;
    uint64_t capacity;
    int64_t maxsize;
    uint64_t max_item;
    int lock_spins;
    int spins;
    /* What this handle last saw of the other end: never ahead of it, as both only grow. */
    uint64_t head_seen, gets_seen, tail_seen;
} Ring;

static void wake(char *word, int count) {
    syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0);
}

/* Take the mutex at `at`; 0, or an error number (the lock is then not held). A holder that
 * died leaves the state of before or after its call; the wake-ups it owed are paid here. */
static int take(Ring *r, size_t at) {
    pthread_mutex_t *mutex = (pthread_mutex_t *)(r->base + at);
    int rc = pthread_mutex_trylock(mutex);
    for (int i = 0; rc == EBUSY && i < r->lock_spins; i++)
        rc = pthread_mutex_trylock(mutex);
    if (rc == EBUSY) {
        Py_BEGIN_ALLOW_THREADS
        rc = pthread_mutex_lock(mutex);
        Py_END_ALLOW_THREADS
    }
    if (rc == EOWNERDEAD) {
        pthread_mutex_consistent(mutex);
        if (at == PUT_MUTEX_AT) {
            PutEnd *p = (PutEnd *)(r->base + PUT_AT);
            STORE(p->not_empty, p->not_empty + 1);
            wake((char *)&p->not_empty, INT32_MAX);
        } else {
            GetEnd *g = (GetEnd *)(r->base + GET_AT);
            STORE(g->not_full, g->not_full + 1);
            STORE(g->tasks, g->tasks + 1);
            wake((char *)&g->not_full, INT32_MAX);
            wake((char *)&g->tasks, INT32_MAX);
        }
        rc = 0;
    }
    return rc;
}

static void give(Ring *r, size_t at) {
    pthread_mutex_unlock((pthread_mutex_t *)(r->base + at));
}

/* The last committed tail (getters) and head and items got (putters), without the other
 * end's lock: retried until no commit came between reading the version and the copy. */
static uint64_t see_tail(Ring *r) {
    PutEnd *p = (PutEnd *)(r->base + PUT_AT);
    for (;;) {
        uint64_t version = LOAD(p->version);
        uint64_t tail = LOAD(p->copy[version & 1][0]);
        if (LOAD(p->version) == version)
            return r->tail_seen = tail;
    }
}

static void see_head(Ring *r) {
    GetEnd *g = (GetEnd *)(r->base + GET_AT);
    for (;;) {
        uint64_t version = LOAD(g->version);
        uint64_t head = LOAD(g->copy[version & 1][0]);
        uint64_t gets = LOAD(g->copy[version & 1][2]);
        if (LOAD(g->version) == version) {
            r->head_seen = head;
            r->gets_seen = gets;
            return;
        }
    }
}

static int fits(Ring *r, uint64_t after, uint64_t puts) {
    return after - r->head_seen <= r->capacity &&
           !(r->maxsize > 0 && (int64_t)(puts - r->gets_seen + 1) > r->maxsize);
}

static PyObject *Ring_put(Ring *r, PyObject *data) {
    if (!PyBytes_CheckExact(data))
        Py_RETURN_FALSE;
    uint64_t n = (uint64_t)PyBytes_GET_SIZE(data);
    if (n > r->max_item || take(r, PUT_MUTEX_AT))
        Py_RETURN_FALSE;
    PutEnd *p = (PutEnd *)(r->base + PUT_AT);
    uint64_t version = p->version;
    uint64_t tail = p->copy[version & 1][0], puts = p->copy[version & 1][1];
    uint64_t at = DATA_AT + tail % r->capacity;
    uint64_t after = tail + 8 + ((n + 7) & ~(uint64_t)7);
    int done = !p->shutdown && at + 8 + n <= DATA_AT + r->capacity;
    if (done && !fits(r, after, puts)) {
        see_head(r);
        done = fits(r, after, puts);
    }
    uint32_t sleepers = 0;
    if (done) {
        uint32_t header[2] = {(uint32_t)n, 0};
        memcpy(r->base + at, header, 8);
        memcpy(r->base + at + 8, PyBytes_AS_STRING(data), n);
        uint64_t *next = p->copy[(version + 1) & 1];
        STORE(next[0], after);
        STORE(next[1], puts + 1);
        STORE(p->version, version + 1);
        STORE(p->not_empty, p->not_empty + 1);
        sleepers = p->sleepers;
    }
    give(r, PUT_MUTEX_AT);
    if (!done)
        Py_RETURN_FALSE;
    if (sleepers)
        wake((char *)&p->not_empty, 1);
    Py_RETURN_TRUE;
}

/* get(spin): the payload of the item at the head, or None. With spin, an empty queue is
 * watched for a while before None: cheaper than sleeping and being woken when items come
 * steadily. */
static PyObject *Ring_get(Ring *r, PyObject *spin) {
    GetEnd *g = (GetEnd *)(r->base + GET_AT);
    PutEnd *p = (PutEnd *)(r->base + PUT_AT);
    int spins = PyObject_IsTrue(spin) ? r->spins : 0;
    for (;;) {
        if (take(r, GET_MUTEX_AT))
            Py_RETURN_NONE;
        uint64_t version = g->version;
        uint64_t *now = g->copy[version & 1];
        uint64_t head = now[0], sub = now[1], gets = now[2], done = now[3];
        if (head < r->tail_seen || head < see_tail(r)) {
            PyObject *payload = NULL;
            uint64_t at = DATA_AT + head % r->capacity;
            uint32_t header[2];
            memcpy(header, r->base + at, 8);
            uint64_t n = header[0];
            uint64_t after = head + 8 + ((n + 7) & ~(uint64_t)7);
            if (n != BATCH && !sub && at + 8 + n <= DATA_AT + r->capacity &&
                after <= r->tail_seen) {
                payload = PyBytes_FromStringAndSize(r->base + at + 8, (Py_ssize_t)n);
            }
            if (payload == NULL) { /* not the usual case, or no memory: the Python path */
                give(r, GET_MUTEX_AT);
                PyErr_Clear();
                Py_RETURN_NONE;
            }
            uint64_t *next = g->copy[(version + 1) & 1];
            STORE(next[0], after);
            STORE(next[1], 0);
            STORE(next[2], gets + 1);
            STORE(next[3], done);
            STORE(g->version, version + 1);
            STORE(g->not_full, g->not_full + 1);
            uint32_t sleepers = g->sleepers;
            give(r, GET_MUTEX_AT);
            if (sleepers)
                wake((char *)&g->not_full, INT32_MAX);
            return payload;
        }
        give(r, GET_MUTEX_AT);
        if (!spins || LOAD(p->shutdown))
            Py_RETURN_NONE;
        for (; spins; spins--) {
            if (see_tail(r) > head)
                break;
            sched_yield(); /* to whoever is about to put, where the processors are busy */
        }
        if (!spins)
            Py_RETURN_NONE;
        spins = 0;
    }
}

static int Ring_init(Ring *r, PyObject *args, PyObject *kwds) {
    static char *names[] = {"keep", "address", "capacity", "maxsize", "max_item",
                            "lock_spins", "spins", NULL};
    PyObject *keep;
    unsigned long long address, capacity, max_item;
    long long maxsize;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKKLKii", names, &keep, &address, &capacity,
                                     &maxsize, &max_item, &r->lock_spins, &r->spins))
        return -1;
    Py_INCREF(keep);
    Py_XSETREF(r->keep, keep);
    r->base = (char *)(uintptr_t)address;
    r->capacity = capacity;
    r->maxsize = maxsize;
    r->max_item = max_item;
    r->head_seen = r->gets_seen = r->tail_seen = 0;
    return 0;
}

static void Ring_dealloc(Ring *r) {
    Py_XDECREF(r->keep);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyMethodDef Ring_methods[] = {
    {"put", (PyCFunction)Ring_put, METH_O,
     "put(payload): True when it is in the ring; False when the Python path must put it."},
    {"get", (PyCFunction)Ring_get, METH_O,
     "get(spin): the payload got, or None when the Python path must get it."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "queuekit.backends._shm_ring.Ring",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The usual put and get on one mapping of a shm:// segment.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Ring_init,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_methods = Ring_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_shm_ring",
    .m_doc = "The usual put and get of shm://, compiled.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__shm_ring(void) {
    if (PyType_Ready(&RingType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RingType);
    if (PyModule_AddObject(m, "Ring", (PyObject *)&RingType) < 0 ||
        PyModule_AddObject(m, "LAYOUT",
                           Py_BuildValue("(iiiii)", PUT_MUTEX_AT, GET_MUTEX_AT, PUT_AT, GET_AT,
                                         DATA_AT)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
