/* objstore.storage._planes: the byte-plane transforms of the bytegroup codecs.
 *
 * split(raw, word, rotate) -> list of `word` bytes objects: every whole `word`-byte
 *     little-endian word of raw, rotated left by `rotate` bits, cut into its bytes;
 *     plane k holds byte k of each word. Trailing bytes (len % word) are ignored.
 * merge(planes, word, rotate, tail) -> bytes: the inverse, with `tail` appended.
 *     Every plane must hold the same number of bytes.
 *
 * pack6(plane) -> bytes or None: None unless every byte's low 2 bits are equal; else
 *     that 2-bit value as one byte, then the high 6 bits of each byte packed 4 to 3
 *     bytes (24 bits little-endian, first value lowest), the last group zero-padded.
 * unpack6(packed, m) -> bytes: the inverse, m bytes; ValueError unless `packed` is
 *     exactly what pack6 writes for some m-byte plane (length, low value < 4, zero padding).
 *
 * Output is defined bit for bit by the Python fallback in objstore/storage/codecs.py
 * (tests/test_codec_planes.py checks both agree). The loops run without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "transforms.h"

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
    (void)self;
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
    (void)self;
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

static PyObject *planes_pack6(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer in;
    if (!PyArg_ParseTuple(args, "y*", &in)) return NULL;
    const uint8_t *p = (const uint8_t *)in.buf;
    Py_ssize_t m = in.len;
    uint8_t low = m ? (uint8_t)(p[0] & 3) : 0;
    int same = 1;
    Py_ssize_t groups = (m + 3) / 4;
    PyObject *out = NULL;
    Py_BEGIN_ALLOW_THREADS
    /* no early exit: an OR over the whole plane vectorizes, and planes that pack are the common case */
    uint8_t diff = 0;
    for (Py_ssize_t i = 0; i < m; i++) diff |= (uint8_t)(p[i] ^ low);
    same = (diff & 3) == 0;
    Py_END_ALLOW_THREADS
    if (!same) {
        PyBuffer_Release(&in);
        Py_RETURN_NONE;
    }
    out = PyBytes_FromStringAndSize(NULL, 1 + 3 * groups);
    if (!out) {
        PyBuffer_Release(&in);
        return NULL;
    }
    uint8_t *d = (uint8_t *)PyBytes_AS_STRING(out);
    d[0] = low;
    d++;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t full = m / 4;
    Py_ssize_t g = 0;
    /* 8 plane bytes (two groups) at a time: their high 6 bits squeezed into 48 bits
     * with lane masks, stored with an 8-byte write while 2 bytes of slack remain. */
    for (; g + 2 <= full && 3 * g + 8 <= 3 * groups; g += 2) {
        uint64_t q;
        memcpy(&q, p + 4 * g, 8);
        q = le64(q);
        uint64_t v = (q >> 2) & 0x3F3F3F3F3F3F3F3Full;
        v = (v & 0x003F003F003F003Full) | ((v & 0x3F003F003F003F00ull) >> 2);
        v = (v & 0x00000FFF00000FFFull) | ((v & 0x0FFF00000FFF0000ull) >> 4);
        v = (v & 0xFFFFFFull) | ((v >> 8) & 0xFFFFFF000000ull);
        v = le64(v);
        memcpy(d + 3 * g, &v, 8);
    }
    for (; g < full; g++) {
        uint32_t q;
        memcpy(&q, p + 4 * g, 4); /* little-endian load of 4 plane bytes */
        q = le32(q);
        uint32_t x = ((q >> 2) & 0x3F) | ((q >> 4) & 0xFC0) | ((q >> 6) & 0x3F000) | ((q >> 8) & 0xFC0000);
        d[3 * g] = (uint8_t)x;
        d[3 * g + 1] = (uint8_t)(x >> 8);
        d[3 * g + 2] = (uint8_t)(x >> 16);
    }
    if (full < groups) {
        uint32_t x = 0;
        for (Py_ssize_t j = 0; 4 * full + j < m; j++) x |= (uint32_t)(p[4 * full + j] >> 2) << (6 * j);
        d[3 * full] = (uint8_t)x;
        d[3 * full + 1] = (uint8_t)(x >> 8);
        d[3 * full + 2] = (uint8_t)(x >> 16);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    return out;
}

static PyObject *planes_unpack6(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer in;
    Py_ssize_t m;
    if (!PyArg_ParseTuple(args, "y*n", &in, &m)) return NULL;
    if (m < 0 || in.len != 1 + 3 * (m / 4 + (m % 4 != 0))) {  /* not (m + 3) / 4: m + 3 may overflow */
        PyErr_Format(PyExc_ValueError, "a 6-bit packed plane of %zd bytes holds %zd bytes", m, in.len);
        PyBuffer_Release(&in);
        return NULL;
    }
    const uint8_t *s = (const uint8_t *)in.buf;
    uint8_t low = s[0];
    if (low > 3) {
        PyErr_Format(PyExc_ValueError, "a 6-bit packed plane names low bits %d", low);
        PyBuffer_Release(&in);
        return NULL;
    }
    s++;
    PyObject *out = PyBytes_FromStringAndSize(NULL, m);
    if (!out) {
        PyBuffer_Release(&in);
        return NULL;
    }
    uint8_t *d = (uint8_t *)PyBytes_AS_STRING(out);
    int pad_ok;
    Py_BEGIN_ALLOW_THREADS
    pad_ok = unpack6_into(s, in.len - 1, low, m, d);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    if (!pad_ok) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, "a 6-bit packed plane has nonzero padding");
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"pack6", planes_pack6, METH_VARARGS, "pack6(plane) -> bytes or None: the plane's constant low 2 bits, then its high 6 bits packed"},
    {"unpack6", planes_unpack6, METH_VARARGS, "unpack6(packed, m) -> bytes: the inverse of pack6, strictly checked"},
    {"split", planes_split, METH_VARARGS, "split(raw, word, rotate) -> list of byte planes of the rotated words"},
    {"merge", planes_merge, METH_VARARGS, "merge(planes, word, rotate, tail) -> bytes: the inverse of split, tail appended"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_planes", "Byte-plane split and merge of rotated words.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__planes(void) { return PyModule_Create(&module); }
