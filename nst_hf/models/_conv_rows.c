/*
 * A strided 1-D convolution over channels-last activations [batch][length][in_channels], as a register-tiled
 * product: output frame t of a window is  bias + sum_j  span_t[j*width, (j+1)*width) . W_j  (j < blocks),
 * where span_t is the window's samples t*stride - pad onwards (blocks*stride samples, so width =
 * stride*in_channels values per block) and W_j is [width][out_channels]. The spans of consecutive frames
 * overlap, so as a matrix they have a leading dimension smaller than their width, which BLAS refuses;
 * nst_hf.models.fast_encoder._shifted_gemm therefore copies the input into a padded buffer and calls BLAS
 * `blocks` times with N = out_channels = 64, where MKL stays well below the FMA peak.
 *
 * Here a tile of CONV_ROWS = 6 frames x 64 channels (24 zmm accumulators) runs over one block's `width`
 * inputs, read straight from the input (from a zero-padded copy for frames at a window's edge), with the
 * block's weights streamed from L1/L2, and is then added to the output tile in memory: out = bias +
 * (block 0), then out += (block j), the same order of fp32 sums as those BLAS calls (each block summed on
 * its own, then added), so the latents keep that rounding.
 *
 * conv_rows(input, weight, bias, out, batch, length, in_channels, stride, pad, blocks, frames, channels,
 * start, stop) computes output rows [start, stop) of batch * frames (GIL released, so Python threads can
 * split the rows); weight is [blocks][width][channels], channels a multiple of 64, and the CPU must have
 * AVX-512F (available() says whether this build and CPU do; the caller uses BLAS otherwise).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define CONV_ROWS 6
#define CONV_COLS 64

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX512_PATH 1

static int cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* Output rows [start, stop) of `batch` windows of `frames` rows (see the header comment). Row g is frame
 * t = g % frames of window b = g / frames; it reads input samples p0 = t*stride - pad .. p0 + span - 1 of
 * that window (span = blocks*stride samples of in_channels values), straight from the input where they lie
 * inside it and from a zero-padded copy at the window's edges. */
__attribute__((target("avx512f"))) static void conv_rows_avx512(const float *input, const float *weight,
                                                               const float *bias, float *out,
                                                               Py_ssize_t length, Py_ssize_t in_channels,
                                                               Py_ssize_t stride, Py_ssize_t pad,
                                                               Py_ssize_t blocks, Py_ssize_t frames,
                                                               Py_ssize_t channels, Py_ssize_t start,
                                                               Py_ssize_t stop, float *edge) {
    const Py_ssize_t width = stride * in_channels, span = blocks * stride;
    /* 64 output channels at a time over all the rows, so that their weights (blocks x width x 64 floats)
     * stay in L2 while the rows stream past */
    for (Py_ssize_t c0 = 0; c0 < channels; c0 += CONV_COLS) {
        for (Py_ssize_t t0 = start; t0 < stop; t0 += CONV_ROWS) {
            const int valid = stop - t0 < CONV_ROWS ? (int)(stop - t0) : CONV_ROWS;
            const float *rows[CONV_ROWS];
            for (int r = 0; r < CONV_ROWS; r++) {
                const Py_ssize_t g = t0 + (r < valid ? r : valid - 1);
                const Py_ssize_t b = g / frames, p0 = (g % frames) * stride - pad;
                const float *window = input + b * length * in_channels;
                if (p0 >= 0 && p0 + span <= length) {
                    rows[r] = window + p0 * in_channels;
                    continue;
                }
                float *copy = edge + r * span * in_channels;
                for (Py_ssize_t p = 0; p < span; p++)
                    for (Py_ssize_t c = 0; c < in_channels; c++)
                        copy[p * in_channels + c] = p0 + p >= 0 && p0 + p < length ? window[(p0 + p) * in_channels + c] : 0.0f;
                rows[r] = copy;
            }
            for (Py_ssize_t j = 0; j < blocks; j++) {
                __m512 acc[CONV_ROWS][4];
                for (int r = 0; r < CONV_ROWS; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = _mm512_setzero_ps();
                const float *wj = weight + j * width * channels + c0;
                const Py_ssize_t offset = j * width;
                for (Py_ssize_t w = 0; w < width; w++) {
                    const float *wr = wj + w * channels;
                    const __m512 w0 = _mm512_loadu_ps(wr), w1 = _mm512_loadu_ps(wr + 16),
                                 w2 = _mm512_loadu_ps(wr + 32), w3 = _mm512_loadu_ps(wr + 48);
                    for (int r = 0; r < CONV_ROWS; r++) {
                        const __m512 v = _mm512_set1_ps(rows[r][offset + w]);
                        acc[r][0] = _mm512_fmadd_ps(v, w0, acc[r][0]);
                        acc[r][1] = _mm512_fmadd_ps(v, w1, acc[r][1]);
                        acc[r][2] = _mm512_fmadd_ps(v, w2, acc[r][2]);
                        acc[r][3] = _mm512_fmadd_ps(v, w3, acc[r][3]);
                    }
                }
                for (int r = 0; r < valid; r++) {
                    float *o = out + (t0 + r) * channels + c0;
                    for (int q = 0; q < 4; q++) {
                        const __m512 before = j == 0 ? _mm512_loadu_ps(bias + c0 + 16 * q) : _mm512_loadu_ps(o + 16 * q);
                        _mm512_storeu_ps(o + 16 * q, _mm512_add_ps(before, acc[r][q]));
                    }
                }
            }
        }
    }
}
#endif

static int usable(void) {
#ifdef HAVE_AVX512_PATH
    return cpu_has_avx512();
#else
    return 0;
#endif
}

static int check_buffer(Py_buffer *view, Py_ssize_t items, const char *name) {
    if (view->len < items * 4 || view->itemsize != 4 || !PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError, "conv_rows: %s must be a C-contiguous float32 buffer of at least %zd items",
                     name, items);
        return 0;
    }
    return 1;
}

static PyObject *conv_rows(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer iv, wv, cv, ov;
    Py_ssize_t batch, length, in_channels, stride, pad, blocks, frames, channels, start, stop;
    if (!PyArg_ParseTuple(args, "y*y*y*w*nnnnnnnnnn", &iv, &wv, &cv, &ov, &batch, &length, &in_channels, &stride,
                          &pad, &blocks, &frames, &channels, &start, &stop))
        return NULL;
    PyObject *result = NULL;
    if (!usable()) {
        PyErr_SetString(PyExc_RuntimeError, "conv_rows: needs AVX-512F (this CPU or build lacks it); "
                        "check available() first");
        goto done;
    }
    const Py_ssize_t count = batch * frames;
    if (batch < 0 || length <= 0 || in_channels <= 0 || stride <= 0 || pad < 0 || blocks <= 0 || frames < 0 ||
        channels <= 0 || channels % CONV_COLS != 0 || start < 0 || stop > count || start > stop) {
        PyErr_SetString(PyExc_ValueError, "conv_rows: need positive sizes, channels a multiple of 64 and "
                        "0 <= start <= stop <= batch * frames");
        goto done;
    }
    if (!check_buffer(&iv, batch * length * in_channels, "input") ||
        !check_buffer(&wv, blocks * stride * in_channels * channels, "weight") ||
        !check_buffer(&cv, channels, "bias") || !check_buffer(&ov, count * channels, "out"))
        goto done;
    float *edge = PyMem_RawMalloc((size_t)CONV_ROWS * (size_t)(blocks * stride * in_channels) * sizeof(float));
    if (edge == NULL) {
        PyErr_NoMemory();
        goto done;
    }
#ifdef HAVE_AVX512_PATH
    Py_BEGIN_ALLOW_THREADS conv_rows_avx512((const float *)iv.buf, (const float *)wv.buf, (const float *)cv.buf,
                                            (float *)ov.buf, length, in_channels, stride, pad, blocks, frames,
                                            channels, start, stop, edge);
    Py_END_ALLOW_THREADS
#endif
    PyMem_RawFree(edge);
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&iv);
    PyBuffer_Release(&wv);
    PyBuffer_Release(&cv);
    PyBuffer_Release(&ov);
    return result;
}

static PyObject *available(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyBool_FromLong(usable());
}

static PyMethodDef methods[] = {
    {"conv_rows", conv_rows, METH_VARARGS,
     "conv_rows(input, weight, bias, out, batch, length, in_channels, stride, pad, blocks, frames, channels, start, stop) -> None"},
    {"available", available, METH_NOARGS, "True when this build and CPU run conv_rows (AVX-512F)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_conv_rows",
                                    "Register-tiled strided convolution rows (see nst_hf.models.fast_encoder).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__conv_rows(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "CHANNEL_BLOCK", CONV_COLS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
