/* objstore.storage._planes: the byte-plane transforms of the bytegroup codecs.
 *
 * split(raw, word, rotate) -> list of `word` bytes objects: every whole `word`-byte
 *     little-endian word of raw, rotated left by `rotate` bits, cut into its bytes;
 *     plane k holds byte k of each word. Trailing bytes (len % word) are ignored.
 * merge(planes, word, rotate, tail) -> bytes: the inverse, with `tail` appended.
 *     Every plane must hold the same number of bytes.
 *
 * Output is defined bit for bit by the Python fallback in objstore/storage/codecs.py
 * (tests/test_codec_planes.py checks both agree). The loops run without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t rotl16(uint16_t x, int r) { return r ? (uint16_t)((x << r) | (x >> (16 - r))) : x; }
static inline uint16_t rotr16(uint16_t x, int r) { return r ? (uint16_t)((x >> r) | (x << (16 - r))) : x; }
static inline uint32_t rotl32(uint32_t x, int r) { return r ? (x << r) | (x >> (32 - r)) : x; }
static inline uint32_t rotr32(uint32_t x, int r) { return r ? (x >> r) | (x << (32 - r)) : x; }

static void split2(const uint8_t *src, Py_ssize_t m, int r, uint8_t *p0, uint8_t *p1) {
    for (Py_ssize_t i = 0; i < m; i++) {
        uint16_t w = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
        w = rotl16(w, r);
        p0[i] = (uint8_t)w;
        p1[i] = (uint8_t)(w >> 8);
    }
}

static void split4(const uint8_t *src, Py_ssize_t m, int r, uint8_t *p0, uint8_t *p1, uint8_t *p2, uint8_t *p3) {
    for (Py_ssize_t i = 0; i < m; i++) {
        uint32_t w = (uint32_t)src[4 * i] | ((uint32_t)src[4 * i + 1] << 8) | ((uint32_t)src[4 * i + 2] << 16) |
                     ((uint32_t)src[4 * i + 3] << 24);
        w = rotl32(w, r);
        p0[i] = (uint8_t)w;
        p1[i] = (uint8_t)(w >> 8);
        p2[i] = (uint8_t)(w >> 16);
        p3[i] = (uint8_t)(w >> 24);
    }
}

static void merge2(uint8_t *dst, Py_ssize_t m, int r, const uint8_t *p0, const uint8_t *p1) {
    for (Py_ssize_t i = 0; i < m; i++) {
        uint16_t w = rotr16((uint16_t)(p0[i] | (p1[i] << 8)), r);
        dst[2 * i] = (uint8_t)w;
        dst[2 * i + 1] = (uint8_t)(w >> 8);
    }
}

static void merge4(uint8_t *dst, Py_ssize_t m, int r, const uint8_t *p0, const uint8_t *p1, const uint8_t *p2,
                   const uint8_t *p3) {
    for (Py_ssize_t i = 0; i < m; i++) {
        uint32_t w = rotr32((uint32_t)p0[i] | ((uint32_t)p1[i] << 8) | ((uint32_t)p2[i] << 16) | ((uint32_t)p3[i] << 24), r);
        dst[4 * i] = (uint8_t)w;
        dst[4 * i + 1] = (uint8_t)(w >> 8);
        dst[4 * i + 2] = (uint8_t)(w >> 16);
        dst[4 * i + 3] = (uint8_t)(w >> 24);
    }
}

static int check_word(int word, int rotate) {
    if (word != 2 && word != 4) {
        PyErr_Format(PyExc_ValueError, "word must be 2 or 4, not %d", word);
        return -1;
    }
    if (rotate < 0 || rotate >= 8 * word) {
        PyErr_Format(PyExc_ValueError, "a %d-byte word cannot be rotated by %d bits", word, rotate);
        return -1;
    }
    return 0;
}

static PyObject *planes_split(PyObject *self, PyObject *args) {
    Py_buffer raw;
    int word, rotate;
    if (!PyArg_ParseTuple(args, "y*ii", &raw, &word, &rotate)) return NULL;
    if (check_word(word, rotate) < 0) {
        PyBuffer_Release(&raw);
        return NULL;
    }
    Py_ssize_t m = raw.len / word;
    PyObject *out = PyList_New(word);
    if (!out) {
        PyBuffer_Release(&raw);
        return NULL;
    }
    uint8_t *p[4] = {NULL, NULL, NULL, NULL};
    for (int k = 0; k < word; k++) {
        PyObject *plane = PyBytes_FromStringAndSize(NULL, m);
        if (!plane) {
            Py_DECREF(out);
            PyBuffer_Release(&raw);
            return NULL;
        }
        PyList_SET_ITEM(out, k, plane);
        p[k] = (uint8_t *)PyBytes_AS_STRING(plane);
    }
    const uint8_t *src = (const uint8_t *)raw.buf;
    Py_BEGIN_ALLOW_THREADS
    if (word == 2)
        split2(src, m, rotate, p[0], p[1]);
    else
        split4(src, m, rotate, p[0], p[1], p[2], p[3]);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&raw);
    return out;
}

static PyObject *planes_merge(PyObject *self, PyObject *args) {
    PyObject *seq;
    Py_buffer tail;
    int word, rotate;
    if (!PyArg_ParseTuple(args, "Oiiy*", &seq, &word, &rotate, &tail)) return NULL;
    PyObject *result = NULL;
    Py_buffer bufs[4];
    int held = 0;
    if (check_word(word, rotate) < 0) goto done;
    PyObject *fast = PySequence_Fast(seq, "planes must be a sequence");
    if (!fast) goto done;
    if (PySequence_Fast_GET_SIZE(fast) != word) {
        PyErr_Format(PyExc_ValueError, "%d-byte words need %d planes, got %zd", word, word, PySequence_Fast_GET_SIZE(fast));
        Py_DECREF(fast);
        goto done;
    }
    for (; held < word; held++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, held), &bufs[held], PyBUF_SIMPLE) < 0) {
            Py_DECREF(fast);
            goto done;
        }
    }
    Py_DECREF(fast);
    Py_ssize_t m = bufs[0].len;
    for (int k = 1; k < word; k++) {
        if (bufs[k].len != m) {
            PyErr_Format(PyExc_ValueError, "plane %d holds %zd bytes, plane 0 %zd", k, bufs[k].len, m);
            goto done;
        }
    }
    if (m > (PY_SSIZE_T_MAX - tail.len) / word) {
        PyErr_SetString(PyExc_OverflowError, "planes too large");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, m * word + tail.len);
    if (!result) goto done;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(result);
    const uint8_t *p[4] = {NULL, NULL, NULL, NULL};
    for (int k = 0; k < word; k++) p[k] = (const uint8_t *)bufs[k].buf;
    Py_BEGIN_ALLOW_THREADS
    if (word == 2)
        merge2(dst, m, rotate, p[0], p[1]);
    else
        merge4(dst, m, rotate, p[0], p[1], p[2], p[3]);
    if (tail.len) memcpy(dst + m * word, tail.buf, (size_t)tail.len);
    Py_END_ALLOW_THREADS
done:
    for (int k = 0; k < held; k++) PyBuffer_Release(&bufs[k]);
    PyBuffer_Release(&tail);
    return result;
}

static PyMethodDef methods[] = {
    {"split", planes_split, METH_VARARGS, "split(raw, word, rotate) -> list of byte planes of the rotated words"},
    {"merge", planes_merge, METH_VARARGS, "merge(planes, word, rotate, tail) -> bytes: the inverse of split, tail appended"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_planes", "Byte-plane split and merge of rotated words.", -1, methods};

PyMODINIT_FUNC PyInit__planes(void) { return PyModule_Create(&module); }
