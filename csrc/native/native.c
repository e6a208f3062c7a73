/* objstore.storage._native: the per-chunk ingest path in C, one call per read block.
 *
 * chunk_block: FastCDC cut points over a buffer (bit-identical to pyfastcdc 0.3.1,
 * which objstore.storage.chunking uses as the reference), rounded up to element
 * boundaries exactly as chunking.py does, and optionally the keyed BLAKE3 of every
 * chunk. hash_many: keyed BLAKE3 of consecutive slices of one buffer.
 *
 * Every function releases the GIL for its whole computation and touches only the
 * caller's buffer (held through the buffer protocol) and memory it allocates.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "../blake3/blake3.h"
#include "../blake3/blake3_impl.h"
#include "gear.h"

typedef struct {
    uint64_t min_size, avg_size, max_size, mask_s, mask_l, mask_s_ls, mask_l_ls;
} cdc_config;

/* pyfastcdc's _cut_gear: the length of the next chunk of buf[0:len]. */
static uint64_t cut_gear(const cdc_config *c, const uint8_t *buf, uint64_t len) {
    uint64_t remaining = len;
    if (remaining <= c->min_size) return remaining;
    uint64_t center = c->avg_size;
    if (remaining > c->max_size) remaining = c->max_size;
    else if (remaining < center) center = remaining;
    uint64_t h = 0, pos;
    const uint64_t start = (c->min_size / 2) * 2, mid = (center / 2) * 2, end = (remaining / 2) * 2;
    const uint64_t ms = c->mask_s, msl = c->mask_s_ls, ml = c->mask_l, mll = c->mask_l_ls;
    for (pos = start; pos < mid; pos += 2) {
        h = (h << 2) + OBJSTORE_GEAR_LS[buf[pos]];
        if (!(h & msl)) return pos;
        h = h + OBJSTORE_GEAR[buf[pos + 1]];
        if (!(h & ms)) return pos + 1;
    }
    for (pos = mid; pos < end; pos += 2) {
        h = (h << 2) + OBJSTORE_GEAR_LS[buf[pos]];
        if (!(h & mll)) return pos;
        h = h + OBJSTORE_GEAR[buf[pos + 1]];
        if (!(h & ml)) return pos + 1;
    }
    return remaining;
}

static void hash_one(const uint8_t key[BLAKE3_KEY_LEN], const uint8_t *data, size_t len, uint8_t *out) {
    blake3_hasher h;
    blake3_hasher_init_keyed(&h, key);
    blake3_hasher_update(&h, data, len);
    blake3_hasher_finalize(&h, out, BLAKE3_OUT_LEN);
}

/* chunking.py's loop over one filled buffer (see Chunker.iter_chunks there): the
 * chunk ends to emit, where the next buffer must restart (carry_from), and whether
 * the segment is done. ends has room for filled / (min_size - 1) + 2 entries; with a key,
 * each chunk is hashed into ids as soon as it is cut, while its bytes are still in
 * the CPU's caches from the cut scan. */
static size_t block_cuts(const cdc_config *c, const uint8_t *buf, uint64_t filled, int at_end, uint64_t base,
                         uint64_t align, uint64_t emitted, uint64_t *ends, uint64_t *carry_from, int *done,
                         const uint8_t *key, uint8_t *ids) {
    size_t n = 0;
    uint64_t off = 0, carry = filled;
    while (off < filled) {
        uint64_t start = off, end = off + cut_gear(c, buf + off, filled - off);
        if (end == filled && !at_end) { carry = start; break; }  /* may not be a real cut */
        uint64_t cut = end;
        if (align > 1) {
            cut = ((base + end + align - 1) / align) * align - base;
            if (cut > filled) {
                if (!at_end) { carry = start; break; }  /* the rounded cut needs bytes not read yet */
                cut = filled;
            }
        }
        if (cut > emitted) {
            if (key) hash_one(key, buf + emitted, (size_t)(cut - emitted), ids + (size_t)BLAKE3_OUT_LEN * n);
            ends[n++] = cut;
            emitted = cut;
        }
        off = end;
    }
    *done = at_end && carry == filled;
    if (*done && emitted < filled) {
        if (key) hash_one(key, buf + emitted, (size_t)(filled - emitted), ids + (size_t)BLAKE3_OUT_LEN * n);
        ends[n++] = filled;
    }
    *carry_from = carry;
    return n;
}

static void hash_slices(const uint8_t key[BLAKE3_KEY_LEN], const uint8_t *buf, uint64_t start, const uint64_t *ends,
                        size_t n, uint8_t *out) {
    for (size_t i = 0; i < n; i++) {
        hash_one(key, buf + start, (size_t)(ends[i] - start), out + (size_t)BLAKE3_OUT_LEN * i);
        start = ends[i];
    }
}

static int get_key(PyObject *obj, Py_buffer *key) {
    if (PyObject_GetBuffer(obj, key, PyBUF_SIMPLE) < 0) return -1;
    if (key->len != BLAKE3_KEY_LEN) {
        PyBuffer_Release(key);
        PyErr_SetString(PyExc_ValueError, "a BLAKE3 key is 32 bytes");
        return -1;
    }
    return 0;
}

static PyObject *ends_list(const uint64_t *ends, size_t n) {
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(ends[i]);
        if (v == NULL) { Py_DECREF(list); return NULL; }
        PyList_SET_ITEM(list, (Py_ssize_t)i, v);
    }
    return list;
}

/* chunk_block(buf, filled, at_end, base, align, emitted, (min, avg, max, mask_s, mask_l), key | None)
 *   -> (ends: list[int], ids: bytes | None, carry_from: int, done: bool) */
static PyObject *chunk_block(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *buf_obj, *key_obj;
    long long s_filled, s_base, s_align, s_emitted;  /* signed: "K" would wrap -1 to 2**64 - 1 unchecked */
    unsigned long long filled, base, align, emitted, min_size, avg_size, max_size, mask_s, mask_l;
    int at_end;
    if (!PyArg_ParseTuple(args, "OLpLLL(KKKKK)O", &buf_obj, &s_filled, &at_end, &s_base, &s_align, &s_emitted, &min_size,
                          &avg_size, &max_size, &mask_s, &mask_l, &key_obj))
        return NULL;
    if (s_filled < 0 || s_base < 0 || s_align < 0 || s_emitted < 0) {
        PyErr_SetString(PyExc_ValueError, "chunk_block: filled, base, align and emitted must not be negative");
        return NULL;
    }
    filled = (unsigned long long)s_filled, base = (unsigned long long)s_base;
    align = (unsigned long long)s_align, emitted = (unsigned long long)s_emitted;
    /* pyfastcdc's own bounds (min >= 64, min <= avg <= max) keep every chunk >= min - 1
     * bytes long, which is what sizes ends[] below and guarantees progress, and keep
     * the scan inside the buffer (it runs to avg before it stops at max). */
    if (min_size < 64 || avg_size < min_size || max_size < avg_size || align < 1 || emitted > filled) {
        PyErr_SetString(PyExc_ValueError, "chunk_block: needs min_size >= 64, min_size <= avg_size <= max_size, align >= 1, emitted <= filled");
        return NULL;
    }
    Py_buffer buf, key = {0};
    if (PyObject_GetBuffer(buf_obj, &buf, PyBUF_SIMPLE) < 0) return NULL;
    if ((unsigned long long)buf.len < filled) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "chunk_block: the buffer is shorter than filled");
        return NULL;
    }
    int hashing = key_obj != Py_None;
    if (hashing && get_key(key_obj, &key) < 0) { PyBuffer_Release(&buf); return NULL; }
    cdc_config c = {min_size, avg_size, max_size, mask_s, mask_l, mask_s << 1, mask_l << 1};
    size_t cap = (size_t)(filled / (min_size - 1)) + 2;
    uint64_t *ends = PyMem_RawMalloc(cap * sizeof(uint64_t));
    uint8_t *ids = hashing ? PyMem_RawMalloc(cap * BLAKE3_OUT_LEN) : NULL;
    if (ends == NULL || (hashing && ids == NULL)) {
        PyMem_RawFree(ends); PyMem_RawFree(ids);
        if (hashing) PyBuffer_Release(&key);
        PyBuffer_Release(&buf);
        return PyErr_NoMemory();
    }
    uint64_t carry;
    int done;
    size_t n;
    Py_BEGIN_ALLOW_THREADS
    n = block_cuts(&c, buf.buf, filled, at_end, base, align, emitted, ends, &carry, &done, hashing ? key.buf : NULL, ids);
    Py_END_ALLOW_THREADS
    if (hashing) PyBuffer_Release(&key);
    PyBuffer_Release(&buf);
    PyObject *list = ends_list(ends, n);
    PyObject *id_bytes = hashing ? PyBytes_FromStringAndSize((const char *)ids, (Py_ssize_t)(n * BLAKE3_OUT_LEN)) : Py_NewRef(Py_None);
    PyMem_RawFree(ends);
    PyMem_RawFree(ids);
    if (list == NULL || id_bytes == NULL) { Py_XDECREF(list); Py_XDECREF(id_bytes); return NULL; }
    return Py_BuildValue("(NNKO)", list, id_bytes, (unsigned long long)carry, done ? Py_True : Py_False);
}

/* hash_many(key, buf, start, ends) -> bytes: the keyed BLAKE3 of buf[start:ends[0]], buf[ends[0]:ends[1]], ... */
static PyObject *hash_many(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *key_obj, *buf_obj, *ends_obj;
    unsigned long long start;
    if (!PyArg_ParseTuple(args, "OOKO", &key_obj, &buf_obj, &start, &ends_obj)) return NULL;
    PyObject *seq = PySequence_Fast(ends_obj, "hash_many: ends must be a sequence of ints");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    uint64_t *ends = PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(uint64_t));
    if (ends == NULL) { Py_DECREF(seq); return PyErr_NoMemory(); }
    uint64_t prev = start;
    for (Py_ssize_t i = 0; i < n; i++) {
        ends[i] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (PyErr_Occurred() || ends[i] < prev) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "hash_many: ends must not decrease");
            PyMem_RawFree(ends); Py_DECREF(seq);
            return NULL;
        }
        prev = ends[i];
    }
    Py_DECREF(seq);
    Py_buffer buf, key;
    if (get_key(key_obj, &key) < 0) { PyMem_RawFree(ends); return NULL; }
    if (PyObject_GetBuffer(buf_obj, &buf, PyBUF_SIMPLE) < 0) { PyBuffer_Release(&key); PyMem_RawFree(ends); return NULL; }
    if ((uint64_t)buf.len < prev) {
        PyBuffer_Release(&buf); PyBuffer_Release(&key); PyMem_RawFree(ends);
        PyErr_SetString(PyExc_ValueError, "hash_many: a slice ends past the buffer");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * BLAKE3_OUT_LEN);
    if (out != NULL) {
        uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS
        hash_slices(key.buf, buf.buf, start, ends, (size_t)n, dst);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&buf);
    PyBuffer_Release(&key);
    PyMem_RawFree(ends);
    return out;
}

/* simd() -> str: the widest BLAKE3 implementation this CPU runs (runtime dispatch). */
static PyObject *simd(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    size_t degree = blake3_simd_degree();
#if defined(IS_X86)
    const char *name = degree >= 16 ? "avx512" : degree >= 8 ? "avx2" : degree >= 4 ? "sse4.1" : "portable";
#elif BLAKE3_USE_NEON == 1
    const char *name = degree >= 4 ? "neon" : "portable";
#else
    const char *name = "portable";
#endif
    return PyUnicode_FromString(name);
}

static PyMethodDef methods[] = {
    {"chunk_block", chunk_block, METH_VARARGS, "FastCDC cuts of one read block, aligned, with each chunk's keyed BLAKE3."},
    {"hash_many", hash_many, METH_VARARGS, "Keyed BLAKE3 of consecutive slices of one buffer."},
    {"simd", simd, METH_NOARGS, "The BLAKE3 SIMD implementation in use."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "objstore's compiled ingest core.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
