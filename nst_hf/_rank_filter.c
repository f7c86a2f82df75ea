/*
 * Running order statistic over a sliding window, for the K-Means chain's running medians.
 *
 * out[i] = the rank-th smallest (0-based) of x[i .. i + window - 1], for i in [start, stop).
 * The window's values are split between a max-heap of the `rank` smallest and a min-heap of the rest;
 * each step overwrites the leaving sample's slot with the entering one, restores that heap and, if
 * needed, swaps the two roots: O(log window) per sample. The result is a sample value, never
 * arithmetic on values, so it equals any exact rank filter (SciPy's included) bit for bit.
 *
 * The GIL is released, so Python threads can fill disjoint output ranges of one long signal at once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    float *value;   /* value of each ring slot */
    int32_t *lo;    /* max-heap of slots (the `rank` smallest values) */
    int32_t *hi;    /* min-heap of slots (the others); hi[0] is the answer */
    int32_t *where; /* heap position of each slot: >= 0 in hi, -1 - position in lo */
    Py_ssize_t nlo, nhi;
} window_heaps;

static inline void put_lo(window_heaps *w, Py_ssize_t p, int32_t slot) {
    w->lo[p] = slot;
    w->where[slot] = (int32_t)(-1 - p);
}

static inline void put_hi(window_heaps *w, Py_ssize_t p, int32_t slot) {
    w->hi[p] = slot;
    w->where[slot] = (int32_t)p;
}

static void sift_lo(window_heaps *w, Py_ssize_t p) { /* max-heap: up, then down */
    const int32_t slot = w->lo[p];
    const float v = w->value[slot];
    while (p > 0) {
        const Py_ssize_t parent = (p - 1) / 2;
        if (!(w->value[w->lo[parent]] < v)) break;
        put_lo(w, p, w->lo[parent]);
        p = parent;
    }
    for (;;) {
        Py_ssize_t child = 2 * p + 1;
        if (child >= w->nlo) break;
        if (child + 1 < w->nlo && w->value[w->lo[child + 1]] > w->value[w->lo[child]]) child++;
        if (!(w->value[w->lo[child]] > v)) break;
        put_lo(w, p, w->lo[child]);
        p = child;
    }
    put_lo(w, p, slot);
}

static void sift_hi(window_heaps *w, Py_ssize_t p) { /* min-heap: up, then down */
    const int32_t slot = w->hi[p];
    const float v = w->value[slot];
    while (p > 0) {
        const Py_ssize_t parent = (p - 1) / 2;
        if (!(w->value[w->hi[parent]] > v)) break;
        put_hi(w, p, w->hi[parent]);
        p = parent;
    }
    for (;;) {
        Py_ssize_t child = 2 * p + 1;
        if (child >= w->nhi) break;
        if (child + 1 < w->nhi && w->value[w->hi[child + 1]] < w->value[w->hi[child]]) child++;
        if (!(w->value[w->hi[child]] < v)) break;
        put_hi(w, p, w->hi[child]);
        p = child;
    }
    put_hi(w, p, slot);
}

typedef struct {
    float value;
    int32_t slot;
} ranked;

static int compare_ranked(const void *a, const void *b) {
    const float x = ((const ranked *)a)->value, y = ((const ranked *)b)->value;
    return (x > y) - (x < y);
}

/* Returns 0, or -1 when memory runs out. */
static int running_rank(const float *x, float *out, Py_ssize_t window, Py_ssize_t rank,
                        Py_ssize_t start, Py_ssize_t stop) {
    window_heaps w;
    w.nlo = rank;
    w.nhi = window - rank;
    w.value = malloc((size_t)window * sizeof(float));
    w.lo = malloc((size_t)(rank > 0 ? rank : 1) * sizeof(int32_t));
    w.hi = malloc((size_t)w.nhi * sizeof(int32_t));
    w.where = malloc((size_t)window * sizeof(int32_t));
    ranked *sorted = malloc((size_t)window * sizeof(ranked));
    int status = -1;
    if (!w.value || !w.lo || !w.hi || !w.where || !sorted) goto done;
    /* ring slot of input position j is (j - start) % window */
    for (Py_ssize_t k = 0; k < window; k++) {
        w.value[k] = x[start + k];
        sorted[k].value = x[start + k];
        sorted[k].slot = (int32_t)k;
    }
    qsort(sorted, (size_t)window, sizeof(ranked), compare_ranked);
    for (Py_ssize_t k = 0; k < rank; k++) put_lo(&w, k, sorted[rank - 1 - k].slot); /* descending */
    for (Py_ssize_t k = rank; k < window; k++) put_hi(&w, k - rank, sorted[k].slot); /* ascending */
    for (Py_ssize_t i = start;; i++) {
        out[i] = w.value[w.hi[0]];
        if (i + 1 >= stop) break;
        const int32_t slot = (int32_t)((i - start) % window);
        w.value[slot] = x[i + window];
        const int32_t at = w.where[slot];
        if (at >= 0)
            sift_hi(&w, at);
        else
            sift_lo(&w, -1 - at);
        if (w.nlo > 0 && w.value[w.lo[0]] > w.value[w.hi[0]]) {
            const int32_t a = w.lo[0], b = w.hi[0];
            put_lo(&w, 0, b);
            put_hi(&w, 0, a);
            sift_lo(&w, 0);
            sift_hi(&w, 0);
        }
    }
    status = 0;
done:
    free(w.value);
    free(w.lo);
    free(w.hi);
    free(w.where);
    free(sorted);
    return status;
}

static PyObject *py_running_rank(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer xv, ov;
    Py_ssize_t window, rank, start, stop;
    if (!PyArg_ParseTuple(args, "y*w*nnnn", &xv, &ov, &window, &rank, &start, &stop)) return NULL;
    PyObject *result = NULL;
    const Py_ssize_t n_in = xv.len / (Py_ssize_t)sizeof(float);
    const Py_ssize_t n_out = ov.len / (Py_ssize_t)sizeof(float);
    if (xv.itemsize != 4 || ov.itemsize != 4 || !PyBuffer_IsContiguous(&xv, 'C') ||
        !PyBuffer_IsContiguous(&ov, 'C')) {
        PyErr_SetString(PyExc_ValueError, "running_rank: x and out must be C-contiguous float32 buffers");
        goto done;
    }
    if (window < 1 || window > INT32_MAX || rank < 0 || rank >= window || start < 0 || start >= stop ||
        stop > n_out || stop - 1 + window > n_in) {
        PyErr_SetString(PyExc_ValueError,
                        "running_rank: need 0 <= rank < window, 0 <= start < stop <= len(out) and "
                        "len(x) >= stop - 1 + window");
        goto done;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS status =
        running_rank((const float *)xv.buf, (float *)ov.buf, window, rank, start, stop);
    Py_END_ALLOW_THREADS if (status != 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&xv);
    PyBuffer_Release(&ov);
    return result;
}

static PyMethodDef methods[] = {
    {"running_rank", py_running_rank, METH_VARARGS,
     "running_rank(x, out, window, rank, start, stop): out[i] = rank-th smallest of x[i:i+window]"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rank_filter",
                                    "Running order statistic (see nst_hf.preprocessing.running_median).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__rank_filter(void) { return PyModule_Create(&module); }
