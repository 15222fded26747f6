/* The two host passes around OpenCV's blur + Canny in dualwatch's edge maps, each one loop.
 *
 * grey_uint8: float image -> uint8 grey, with the exact bytes of the OpenCV calls it replaces.
 *
 * dualwatch's edge maps turned each [C, H, W] float image into the uint8 grey image Canny sees
 * with OpenCV and numpy calls: two cv2.scaleAdd (the BT.601 grey, in the image's type), a NaN
 * check, cv2.minMaxLoc, a clamp when needed (np.clip) and cv2.convertScaleAbs: five to seven
 * passes over the image, each reading or writing a float buffer. This loop reads every channel
 * once and writes the uint8 image once, and gives the same bytes:
 *
 *   grey  = fma(B, wb, fma(R, wr, G))      cv2.scaleAdd twice: fused multiply-adds, weights in
 *                                          the image's type (scaleAdd casts alpha to float for
 *                                          float32 images); grey images are used as they are
 *   NaN?  -> return the index of the first NaN pixel, the caller raises
 *   grey  = min(max(grey, low), high)      the clamp, bounds in the image's type (np.clip casts
 *                                          Python floats to float32); a clamp of in-range values
 *                                          is a no-op, so it is done always
 *   v     = |fmaf((float)grey, a, b)|      cv2.convertScaleAbs to uint8: a float fused
 *                                          multiply-add (double images are rounded to float
 *                                          first), absolute value,
 *   out   = saturate(round half to even v) cvRound's rounding; Inf, NaN and values of 2^31 or
 *                                          more become INT_MIN there, so 0 here, as in OpenCV
 *
 * OpenCV fuses these multiply-adds where the CPU has FMA (its AVX2 and AVX-512 builds on x86,
 * NEON on ARM); the caller checks once that OpenCV's bytes and these agree before using this.
 * OpenCV's scalar tail of convertScaleAbs (images under its vector width, 16 to 32 pixels)
 * rounds differently, so the caller keeps small images on the OpenCV path.
 *
 * grey_uint8(image, out, wr, wb, low, high, a, b) -> -1, or the flat index of the first NaN grey
 * image: C-contiguous float32 or float64 [C, H, W], C = 1 or 3; out: writable uint8 of H*W bytes.
 *
 * edge_map(edges, target, off, on): Canny's {0, 255} uint8 edges -> float32 map, `on` where an
 * edge is and `off` elsewhere: one pass instead of cv2.threshold to 0/1 and a uint8 -> float copy
 * (large maps with streaming stores, see STREAM_BYTES).
 *
 * The GIL is released in both loops, so threads work on different images at once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* x86-64 builds without -mfma would call libm's fmaf per pixel (and use 16-byte vectors): an
 * AVX2 + FMA copy of each loop is compiled too and chosen at import from what the CPU has
 * (target_clones' "arch=haswell" tests for an Intel model: AMD CPUs would get the slow copy). */
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define FMA_COPY(NAME) __attribute__((target("avx2,fma"))) NAME##_fma
#define HAS_FMA_COPY 1
#endif

#define BLOCK 4096 /* pixels per NaN check: the loop stays branch-free and vectorised inside */

/* cvRound's round half to even and saturate_cast<uchar>, for v >= 0 or NaN, written without
 * branches so the loop vectorises. Below 2^22, adding and subtracting 1.5 * 2^23 rounds to an
 * integer (in the default, nearest-even mode); anything larger is 255 once capped. cvRound gives
 * INT_MIN for Inf, NaN and values of 2^31 or more, which saturates to 0. */
static inline uint8_t to_uint8(float v) {
    float r = (v + 12582912.0f) - 12582912.0f;
    r = r > 255.0f ? 255.0f : r >= 0.0f ? r : 0.0f; /* NaN -> 0: the conversion below is defined */
    return v < 2147483648.0f ? (uint8_t)(int32_t)r : 0;
}

/* One image type and channel count; GREY(i) is pixel i's grey value, in T. */
#define GREY_LOOP(T, GREY)                                                                         \
    {                                                                                              \
        (void)wr, (void)wb;                                                                        \
        for (Py_ssize_t start = 0; start < n; start += BLOCK) {                                    \
            Py_ssize_t end = start + BLOCK < n ? start + BLOCK : n;                                \
            int nan = 0;                                                                           \
            for (Py_ssize_t i = start; i < end; i++) {                                             \
                T grey = GREY(i);                                                                  \
                nan |= grey != grey;                                                               \
                grey = grey < low ? low : grey;                                                    \
                grey = grey > high ? high : grey;                                                  \
                out[i] = to_uint8(fabsf(fmaf((float)grey, a, b)));                                 \
            }                                                                                      \
            for (Py_ssize_t i = start; nan && i < end; i++) {                                      \
                T grey = GREY(i);                                                                  \
                if (grey != grey)                                                                  \
                    return i;                                                                      \
            }                                                                                      \
        }                                                                                          \
        return -1;                                                                                 \
    }

#define GREY_ARGS(T) \
    (const T *restrict image, Py_ssize_t n, uint8_t *restrict out, T wr, T wb, T low, T high, float a, float b)

#ifdef HAS_FMA_COPY
#define DEFINE_GREY(NAME, T, GREY)                                                                 \
    static Py_ssize_t NAME GREY_ARGS(T) GREY_LOOP(T, GREY)                                         \
    static Py_ssize_t FMA_COPY(NAME) GREY_ARGS(T) GREY_LOOP(T, GREY)
#else
#define DEFINE_GREY(NAME, T, GREY) static Py_ssize_t NAME GREY_ARGS(T) GREY_LOOP(T, GREY)
#endif

#define GREY_RGB_FLOAT(i) fmaf(image[2 * n + (i)], wb, fmaf(image[i], wr, image[n + (i)]))
#define GREY_RGB_DOUBLE(i) fma(image[2 * n + (i)], wb, fma(image[i], wr, image[n + (i)]))
#define GREY_ONE(i) image[i]

DEFINE_GREY(rgb_float, float, GREY_RGB_FLOAT)
DEFINE_GREY(rgb_double, double, GREY_RGB_DOUBLE)
DEFINE_GREY(one_float, float, GREY_ONE)
DEFINE_GREY(one_double, double, GREY_ONE)

#ifdef HAS_FMA_COPY
static int fma_available; /* set once at import */
#endif

static PyObject *grey_uint8(PyObject *self, PyObject *args) {
    PyObject *image_obj, *out_obj;
    double wr, wb, low, high, a, b;
    if (!PyArg_ParseTuple(args, "OOdddddd", &image_obj, &out_obj, &wr, &wb, &low, &high, &a, &b))
        return NULL;
    Py_buffer image, out;
    if (PyObject_GetBuffer(image_obj, &image, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&image);
        return NULL;
    }
    PyObject *result = NULL;
    char kind = image.format ? image.format[image.format[0] == '<' || image.format[0] == '=' ? 1 : 0] : 'B';
    Py_ssize_t itemsize = kind == 'f' ? 4 : kind == 'd' ? 8 : 0;
    Py_ssize_t n = out.len, channels = itemsize && n ? image.len / itemsize / n : 0;
    if (!itemsize || image.ndim != 3 || (channels != 1 && channels != 3) || image.shape[0] != channels ||
        image.len != channels * n * itemsize) {
        PyErr_SetString(PyExc_ValueError,
                        "grey_uint8 takes a C-contiguous float32/float64 [C, H, W] image (C = 1 or 3) "
                        "and a uint8 buffer of H*W bytes");
        goto done;
    }
    Py_ssize_t nan;
    Py_BEGIN_ALLOW_THREADS
    const float fa = (float)a, fb = (float)b;
    Py_ssize_t (*of_float) GREY_ARGS(float) = channels == 3 ? rgb_float : one_float;
    Py_ssize_t (*of_double) GREY_ARGS(double) = channels == 3 ? rgb_double : one_double;
#ifdef HAS_FMA_COPY
    if (fma_available) {
        of_float = channels == 3 ? rgb_float_fma : one_float_fma;
        of_double = channels == 3 ? rgb_double_fma : one_double_fma;
    }
#endif
    if (kind == 'f')
        nan = of_float((const float *)image.buf, n, (uint8_t *)out.buf, (float)wr, (float)wb, (float)low,
                       (float)high, fa, fb);
    else
        nan = of_double((const double *)image.buf, n, (uint8_t *)out.buf, wr, wb, low, high, fa, fb);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(nan);
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&image);
    return result;
}

#define MAP_LOOP                                                                                   \
    {                                                                                              \
        for (Py_ssize_t i = 0; i < n; i++)                                                         \
            to[i] = from[i] ? on : off;                                                            \
    }
#define MAP_ARGS (const uint8_t *restrict from, float *restrict to, Py_ssize_t n, float off, float on)

static void map_floats MAP_ARGS MAP_LOOP
#ifdef HAS_FMA_COPY
static void FMA_COPY(map_floats) MAP_ARGS MAP_LOOP

/* Maps of STREAM_BYTES or more (256x256 pixels and up) do not stay in cache while the next images
 * are read, so they are written with streaming stores: the CPU then skips reading each target
 * line before overwriting it, which a plain store does (a 512x512 map moves 1 MB instead of 2). */
#define STREAM_BYTES (256 * 1024)

__attribute__((target("avx2"))) static void map_floats_streamed MAP_ARGS {
    Py_ssize_t i = 0;
    for (; i < n && ((uintptr_t)(to + i) & 31); i++) /* up to a 32-byte boundary */
        to[i] = from[i] ? on : off;
    const __m256 edge = _mm256_set1_ps(on), other = _mm256_set1_ps(off);
    for (; i + 8 <= n; i += 8) {
        __m256i eight = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(from + i)));
        __m256 none = _mm256_castsi256_ps(_mm256_cmpeq_epi32(eight, _mm256_setzero_si256()));
        _mm256_stream_ps(to + i, _mm256_blendv_ps(edge, other, none));
    }
    for (; i < n; i++)
        to[i] = from[i] ? on : off;
    _mm_sfence(); /* the streamed lines are visible to every thread before the call returns */
}
#endif

static PyObject *edge_map(PyObject *self, PyObject *args) {
    PyObject *edges_obj, *target_obj;
    float off, on;
    if (!PyArg_ParseTuple(args, "OOff", &edges_obj, &target_obj, &off, &on))
        return NULL;
    Py_buffer edges, target;
    if (PyObject_GetBuffer(edges_obj, &edges, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (PyObject_GetBuffer(target_obj, &target, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&edges);
        return NULL;
    }
    PyObject *result = NULL;
    const char *format = target.format ? target.format : "B";
    if ((strcmp(format, "f") && strcmp(format, "<f") && strcmp(format, "=f")) ||
        target.len != edges.len * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "edge_map takes uint8 edges and a C-contiguous float32 target of as many values");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
#ifdef HAS_FMA_COPY
    void (*map) MAP_ARGS = !fma_available                                       ? map_floats
                           : edges.len * (Py_ssize_t)sizeof(float) >= STREAM_BYTES ? map_floats_streamed
                                                                                 : map_floats_fma;
    map((const uint8_t *)edges.buf, (float *)target.buf, edges.len, off, on);
#else
    map_floats((const uint8_t *)edges.buf, (float *)target.buf, edges.len, off, on);
#endif
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&target);
    PyBuffer_Release(&edges);
    return result;
}

static PyMethodDef methods[] = {
    {"grey_uint8", grey_uint8, METH_VARARGS,
     "grey_uint8(image, out, wr, wb, low, high, a, b) -> -1 or the index of the first NaN grey pixel"},
    {"edge_map", edge_map, METH_VARARGS, "edge_map(edges, target, off, on): target = on where edges else off"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_edgehost", NULL, -1, methods};

PyMODINIT_FUNC PyInit__edgehost(void) {
#ifdef HAS_FMA_COPY
    __builtin_cpu_init();
    fma_available = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return PyModule_Create(&module);
}
