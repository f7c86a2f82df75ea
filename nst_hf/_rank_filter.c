/*
 * Running order statistic over a sliding window, for the K-Means chain's running medians.
 *
 * out[i] = the rank-th smallest (0-based) of x[i .. i + window - 1], for i in [start, stop).
 * The window's values are split between a max-heap of the `rank` smallest and a min-heap of the rest;
 * each step overwrites the leaving sample's slot with the entering one, restores that heap and, if
 * needed, swaps the two roots: O(log window) per sample. The result is a sample value, never
 * arithmetic on values, so it equals any exact rank filter (SciPy's included) bit for bit (on the histogram
 * path below, equal values are one value: a -0.0 median may come out as +0.0).
 *
 * Windows of 5 (the median filter of the K-Means chain) use a min/max network instead.
 *
 * Signals with few distinct values (raw nanopore current is 16-bit ADC counts, so a read has a few hundred)
 * can go through `running_rank_codes` instead: each sample is replaced by its index among the sorted distinct
 * values, and a histogram of those indices with a pointer at the answer slides along (O(1) per sample while
 * the answer moves by a few indices). If the pointer walks more than `budget` indices per sample on
 * average, the rest of the range goes back to the heaps, so no input is slower than O(log window).
 *
 * The GIL is released, so Python threads can fill disjoint output ranges of one long signal at once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

/* A heap entry carries its value, so comparisons need no second load. */
typedef struct {
    float v;
    int32_t slot;
} entry;

typedef struct {
    entry *lo;      /* max-heap (the `rank` smallest values) */
    entry *hi;      /* min-heap (the others); hi[0].v is the answer */
    int32_t *where; /* heap position of each ring slot: >= 0 in hi, -1 - position in lo */
    Py_ssize_t nlo, nhi;
} window_heaps;

static inline void put_lo(window_heaps *w, Py_ssize_t p, entry e) {
    w->lo[p] = e;
    w->where[e.slot] = (int32_t)(-1 - p);
}

static inline void put_hi(window_heaps *w, Py_ssize_t p, entry e) {
    w->hi[p] = e;
    w->where[e.slot] = (int32_t)p;
}

static void sift_lo(window_heaps *w, Py_ssize_t p) { /* max-heap: up, then down */
    const entry e = w->lo[p];
    while (p > 0) {
        const Py_ssize_t parent = (p - 1) / 2;
        if (!(w->lo[parent].v < e.v)) break;
        put_lo(w, p, w->lo[parent]);
        p = parent;
    }
    for (;;) {
        Py_ssize_t child = 2 * p + 1;
        if (child >= w->nlo) break;
        if (child + 1 < w->nlo && w->lo[child + 1].v > w->lo[child].v) child++;
        if (!(w->lo[child].v > e.v)) break;
        put_lo(w, p, w->lo[child]);
        p = child;
    }
    put_lo(w, p, e);
}

static void sift_hi(window_heaps *w, Py_ssize_t p) { /* min-heap: up, then down */
    const entry e = w->hi[p];
    while (p > 0) {
        const Py_ssize_t parent = (p - 1) / 2;
        if (!(w->hi[parent].v > e.v)) break;
        put_hi(w, p, w->hi[parent]);
        p = parent;
    }
    for (;;) {
        Py_ssize_t child = 2 * p + 1;
        if (child >= w->nhi) break;
        if (child + 1 < w->nhi && w->hi[child + 1].v < w->hi[child].v) child++;
        if (!(w->hi[child].v < e.v)) break;
        put_hi(w, p, w->hi[child]);
        p = child;
    }
    put_hi(w, p, e);
}

static int compare_entries(const void *a, const void *b) {
    const float x = ((const entry *)a)->v, y = ((const entry *)b)->v;
    return (x > y) - (x < y);
}

/* Returns 0, or -1 when memory runs out. */
static int running_rank(const float *x, float *out, Py_ssize_t window, Py_ssize_t rank,
                        Py_ssize_t start, Py_ssize_t stop) {
    window_heaps w;
    w.nlo = rank;
    w.nhi = window - rank;
    w.lo = malloc((size_t)(rank > 0 ? rank : 1) * sizeof(entry));
    w.hi = malloc((size_t)w.nhi * sizeof(entry));
    w.where = malloc((size_t)window * sizeof(int32_t));
    entry *sorted = malloc((size_t)window * sizeof(entry));
    int status = -1;
    if (!w.lo || !w.hi || !w.where || !sorted) goto done;
    /* ring slot of input position j is (j - start) % window */
    for (Py_ssize_t k = 0; k < window; k++) {
        sorted[k].v = x[start + k];
        sorted[k].slot = (int32_t)k;
    }
    qsort(sorted, (size_t)window, sizeof(entry), compare_entries);
    for (Py_ssize_t k = 0; k < rank; k++) put_lo(&w, k, sorted[rank - 1 - k]); /* descending */
    for (Py_ssize_t k = rank; k < window; k++) put_hi(&w, k - rank, sorted[k]); /* ascending */
    int32_t slot = 0; /* ring slot of the sample leaving next: (i - start) % window */
    for (Py_ssize_t i = start;; i++) {
        out[i] = w.hi[0].v;
        if (i + 1 >= stop) break;
        const float entering = x[i + window];
        const int32_t at = w.where[slot];
        if (at >= 0) {
            w.hi[at].v = entering;
            sift_hi(&w, at);
        } else {
            w.lo[-1 - at].v = entering;
            sift_lo(&w, -1 - at);
        }
        if (++slot == window) slot = 0;
        if (w.nlo > 0 && w.lo[0].v > w.hi[0].v) {
            const entry a = w.lo[0], b = w.hi[0];
            put_lo(&w, 0, b);
            put_hi(&w, 0, a);
            sift_lo(&w, 0);
            sift_hi(&w, 0);
        }
    }
    status = 0;
done:
    free(w.lo);
    free(w.hi);
    free(w.where);
    free(sorted);
    return status;
}

/* out[i] = median of x[i .. i + 4] for i in [start, stop): min/max only, so the result is one of the five
 * values (as with the heaps). median5 = med3(c, max(min(a, b), min(d, e)), min(max(a, b), max(d, e))). */
#define MIN(p, q) ((p) < (q) ? (p) : (q))
#define MAX(p, q) ((p) < (q) ? (q) : (p))
static void running_median5(const float *x, float *out, Py_ssize_t start, Py_ssize_t stop) {
    for (Py_ssize_t i = start; i < stop; i++) {
        const float a = x[i], b = x[i + 1], c = x[i + 2], d = x[i + 3], e = x[i + 4];
        const float f = MAX(MIN(a, b), MIN(d, e)), g = MIN(MAX(a, b), MAX(d, e));
        out[i] = MAX(MIN(c, f), MIN(MAX(c, f), g));
    }
}

/* Index of v in the sorted distinct values u[0 .. nu - 1] (v is one of them): the last u[k] <= v. */
static inline int32_t code_of(const float *u, Py_ssize_t nu, float v) {
    const float *base = u;
    Py_ssize_t len = nu;
    while (len > 1) {
        const Py_ssize_t half = len / 2;
        base = (base[half] <= v) ? base + half : base;
        len -= half;
    }
    return (int32_t)(base - u);
}

/* running_rank over the indices of x in u (see the top of the file). Returns 0, or -1 without memory;
 * *heaps_from is the first position the heaps filled (stop if none). */
static int running_rank_codes(const float *x, const float *u, Py_ssize_t nu, float *out, Py_ssize_t window,
                              Py_ssize_t rank, Py_ssize_t start, Py_ssize_t stop, Py_ssize_t budget,
                              Py_ssize_t *heaps_from) {
    const Py_ssize_t n = stop - 1 + window - start;
    int32_t *codes = malloc((size_t)n * sizeof(int32_t));
    Py_ssize_t *hist = calloc((size_t)nu, sizeof(Py_ssize_t));
    int status = -1;
    *heaps_from = stop;
    if (!codes || !hist) goto done;
    for (Py_ssize_t j = 0; j < n; j++) codes[j] = code_of(u, nu, x[start + j]);
    for (Py_ssize_t k = 0; k < window; k++) hist[codes[k]]++;
    Py_ssize_t m = 0, below = 0; /* answer index; samples in the window with a smaller index */
    while (below + hist[m] <= rank) below += hist[m++];
    long long walked = 0;
    const long long allowed = (long long)nu;
    for (Py_ssize_t i = start;; i++) {
        out[i] = u[m];
        if (i + 1 >= stop) break;
        const int32_t leaving = codes[i - start], entering = codes[i - start + window];
        hist[leaving]--;
        below -= leaving < m;
        hist[entering]++;
        below += entering < m;
        while (rank < below) {
            below -= hist[--m];
            walked++;
        }
        while (rank >= below + hist[m]) {
            below += hist[m++];
            walked++;
        }
        if (walked > allowed + (long long)budget * (i + 1 - start)) { /* scattered values: back to the heaps */
            *heaps_from = i + 1;
            status = running_rank(x, out, window, rank, i + 1, stop);
            goto done;
        }
    }
    status = 0;
done:
    free(codes);
    free(hist);
    return status;
}

static PyObject *py_running_rank_codes(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer xv, uv, ov;
    Py_ssize_t window, rank, start, stop, budget;
    if (!PyArg_ParseTuple(args, "y*y*w*nnnnn", &xv, &uv, &ov, &window, &rank, &start, &stop, &budget)) return NULL;
    PyObject *result = NULL;
    const Py_ssize_t n_in = xv.len / (Py_ssize_t)sizeof(float);
    const Py_ssize_t n_values = uv.len / (Py_ssize_t)sizeof(float);
    const Py_ssize_t n_out = ov.len / (Py_ssize_t)sizeof(float);
    if (xv.itemsize != 4 || uv.itemsize != 4 || ov.itemsize != 4 || !PyBuffer_IsContiguous(&xv, 'C') ||
        !PyBuffer_IsContiguous(&uv, 'C') || !PyBuffer_IsContiguous(&ov, 'C')) {
        PyErr_SetString(PyExc_ValueError,
                        "running_rank_codes: x, values and out must be C-contiguous float32 buffers");
        goto done;
    }
    if (window < 1 || window > INT32_MAX || rank < 0 || rank >= window || start < 0 || start >= stop ||
        stop > n_out || stop - 1 + window > n_in || n_values < 1 || n_values > INT32_MAX || budget < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "running_rank_codes: need 0 <= rank < window, 0 <= start < stop <= len(out), "
                        "len(x) >= stop - 1 + window, values not empty and budget >= 0");
        goto done;
    }
    int status;
    Py_ssize_t heaps_from;
    Py_BEGIN_ALLOW_THREADS
    status = running_rank_codes((const float *)xv.buf, (const float *)uv.buf, n_values, (float *)ov.buf, window,
                                rank, start, stop, budget, &heaps_from);
    Py_END_ALLOW_THREADS if (status != 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyLong_FromSsize_t(heaps_from);
done:
    PyBuffer_Release(&xv);
    PyBuffer_Release(&uv);
    PyBuffer_Release(&ov);
    return result;
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
    int status = 0;
    Py_BEGIN_ALLOW_THREADS
    if (window == 5 && rank == 2)
        running_median5((const float *)xv.buf, (float *)ov.buf, start, stop);
    else
        status = running_rank((const float *)xv.buf, (float *)ov.buf, window, rank, start, stop);
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
    {"running_rank_codes", py_running_rank_codes, METH_VARARGS,
     "running_rank_codes(x, values, out, window, rank, start, stop, budget): running_rank for x whose every "
     "value is in the sorted distinct float32 values; back to the heaps past budget index steps a sample. "
     "Returns the first position the heaps filled (stop if none)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rank_filter",
                                    "Running order statistic (see nst_hf.preprocessing.running_median).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__rank_filter(void) { return PyModule_Create(&module); }
