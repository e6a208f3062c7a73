/* objstore.storage._native: the per-chunk ingest path in C, one call per read block.
 *
 * chunk_block: FastCDC cut points over a buffer (bit-identical to pyfastcdc 0.3.1,
 * which objstore.storage.chunking uses as the reference), rounded up to element
 * boundaries exactly as chunking.py does, or the word-sampled cuts of a tensor
 * (bit-identical to native.py's numpy reference), and optionally the keyed BLAKE3 of every
 * chunk. hash_many: keyed BLAKE3 of consecutive
 * slices of one buffer. stream_*: one keyed BLAKE3 stream over many buffers (pack checksums).
 *
 * Every function releases the GIL for its whole computation and touches only the
 * caller's buffer (held through the buffer protocol) and memory it allocates.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#if !defined(_WIN32)
#include <unistd.h>
#endif

#include "../blake3/blake3.h"
#include "../blake3/blake3_impl.h"
#include "gear.h"
#include "../planes/transforms.h"

typedef struct {
    uint64_t min_size, avg_size, max_size, mask_s, mask_l, mask_s_ls, mask_l_ls;
    uint64_t stride; /* 0: the gear over every byte; else word-sampled cuts every `stride` bytes */
} cdc_config;

#define OBJSTORE_NO_CUT UINT64_MAX

/* pyfastcdc's gear loop over the byte pairs of buf[pos:end] (pos and end even): the
 * first cut, tested with masks m_ls after a pair's first byte and m after its second,
 * or OBJSTORE_NO_CUT, with the hash carried on in *hp. Four pairs per turn: the same
 * tests in the same order, fewer instructions per byte (the loop is bound by their
 * count, not by the hash's chain: callgrind 165 M -> 130 M over 32 MiB). */
static inline uint64_t gear_scan(const uint8_t *buf, uint64_t pos, uint64_t end, uint64_t m_ls, uint64_t m,
                                 uint64_t *hp) {
    uint64_t h = *hp;
#define OBJSTORE_GEAR_PAIR(p) do { \
        h = (h << 2) + OBJSTORE_GEAR_LS[buf[(p)]]; \
        if (!(h & m_ls)) return (p); \
        h = h + OBJSTORE_GEAR[buf[(p) + 1]]; \
        if (!(h & m)) return (p) + 1; \
    } while (0)
    for (; pos + 8 <= end; pos += 8) {
        OBJSTORE_GEAR_PAIR(pos);
        OBJSTORE_GEAR_PAIR(pos + 2);
        OBJSTORE_GEAR_PAIR(pos + 4);
        OBJSTORE_GEAR_PAIR(pos + 6);
    }
    for (; pos < end; pos += 2) OBJSTORE_GEAR_PAIR(pos);
#undef OBJSTORE_GEAR_PAIR
    *hp = h;
    return OBJSTORE_NO_CUT;
}

/* pyfastcdc's window for the next chunk of len bytes (len > min_size): where the
 * scan ends (the chunk's largest length) and where it switches from mask_s to mask_l. */
static inline uint64_t chunk_window(const cdc_config *c, uint64_t len, uint64_t *center) {
    *center = c->avg_size;
    if (len > c->max_size) return c->max_size;
    if (len < *center) *center = len;
    return len;
}

/* pyfastcdc's _cut_gear: the length of the next chunk of buf[0:len]. */
static uint64_t cut_gear(const cdc_config *c, const uint8_t *buf, uint64_t len) {
    if (len <= c->min_size) return len;
    uint64_t center, remaining = chunk_window(c, len, &center);
    uint64_t h = 0;
    const uint64_t start = (c->min_size / 2) * 2, mid = (center / 2) * 2, end = (remaining / 2) * 2;
    uint64_t cut = gear_scan(buf, start, mid, c->mask_s_ls, c->mask_s, &h);
    if (cut == OBJSTORE_NO_CUT) cut = gear_scan(buf, mid, end, c->mask_l_ls, c->mask_l, &h);
    return cut == OBJSTORE_NO_CUT ? remaining : cut;
}

/* Word-sampled cuts (chunking.py, "words"): the candidates are the multiples of
 * c->stride from the chunk start (itself one), and a candidate p cuts when the
 * 64-bit little-endian word buf[p-8:p], mixed, has no bit of the mask set. The
 * same loop as cut_gear's: mask_s up to avg_size, mask_l on to max_size. One
 * multiply per candidate, not a gear step per byte: the scan costs nearly nothing
 * (min_size >= 64 keeps p - 8 inside the chunk). */
#define OBJSTORE_WORD_XOR 0x243F6A8885A308D3ull
#define OBJSTORE_WORD_MUL 0x9E3779B97F4A7C15ull
static inline uint64_t word_mix(const uint8_t *end) {
    uint64_t w;
    memcpy(&w, end - 8, 8);
    return (le64(w) ^ OBJSTORE_WORD_XOR) * OBJSTORE_WORD_MUL;
}

static uint64_t cut_words(const cdc_config *c, const uint8_t *buf, uint64_t len) {
    if (len <= c->min_size) return len;
    uint64_t center, remaining = chunk_window(c, len, &center);
    const uint64_t g = c->stride;
    uint64_t p = (c->min_size + g - 1) / g * g;
    for (; p < center; p += g)
        if (!(word_mix(buf + p) & c->mask_s)) return p;
    for (; p < remaining; p += g)
        if (!(word_mix(buf + p) & c->mask_l)) return p;
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
        uint64_t start = off, end = off + (c->stride ? cut_words(c, buf + off, filled - off) : cut_gear(c, buf + off, filled - off));
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

/* -- a streaming hash whose state lives in a caller's bytearray ----------------------------
 *
 * A pack checksum is one keyed BLAKE3 stream (stream_update). The state is a plain struct
 * (blake3_hasher holds no pointers) kept in a bytearray the caller owns; it is copied in
 * and out, so its alignment does not matter. */
#define STREAM_MAGIC 0x6f62737374726561ull /* "obsstrea" */

/* A stream's state: its hasher, then a STREAM_BUF-byte buffer. Bytes are hashed only in
 * whole buffers, each starting at a multiple of STREAM_BUF from the stream's start, so
 * BLAKE3 always gets whole, aligned subtrees and hashes 16 chunks at once: fed a pack's
 * records as they come (41-byte heads between payloads), it would hash mostly one
 * chunk at a time, at a quarter of the speed (1.8 against 7 GB/s measured). */
typedef struct {
    uint64_t magic, buffered;
    blake3_hasher h;
} stream_head;

#define STREAM_BUF 65536

static int stream_take(PyObject *obj, Py_buffer *view, stream_head *head) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) < 0) return -1;
    if ((size_t)view->len == sizeof(stream_head) + STREAM_BUF) {
        memcpy(head, view->buf, sizeof(*head));
        if (head->magic == STREAM_MAGIC && head->buffered < STREAM_BUF) return 0;
    }
    PyBuffer_Release(view);
    PyErr_SetString(PyExc_ValueError, "not a hashing state made by this module");
    return -1;
}

static void stream_feed(stream_head *head, uint8_t *buf, const uint8_t *data, size_t len) {
    while (len) {
        if (head->buffered == 0 && len >= STREAM_BUF) {  /* whole aligned buffers: no copy */
            size_t whole = len - len % STREAM_BUF;
            blake3_hasher_update(&head->h, data, whole);
            data += whole;
            len -= whole;
            continue;
        }
        size_t take = STREAM_BUF - (size_t)head->buffered < len ? STREAM_BUF - (size_t)head->buffered : len;
        memcpy(buf + head->buffered, data, take);
        head->buffered += take;
        data += take;
        len -= take;
        if (head->buffered == STREAM_BUF) {
            blake3_hasher_update(&head->h, buf, STREAM_BUF);
            head->buffered = 0;
        }
    }
}

/* stream_new(key) -> bytearray: the state of one keyed BLAKE3 stream. */
static PyObject *stream_new(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer key;
    if (get_key(arg, &key) < 0) return NULL;
    PyObject *out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(sizeof(stream_head) + STREAM_BUF));
    if (out != NULL) {
        stream_head head;
        memset(&head, 0, sizeof(head));
        head.magic = STREAM_MAGIC;
        blake3_hasher_init_keyed(&head.h, key.buf);
        memcpy(PyByteArray_AS_STRING(out), &head, sizeof(head));
    }
    PyBuffer_Release(&key);
    return out;
}

/* stream_update(state, pieces): hash each buffer of the sequence, in order, in one
 * GIL-free pass (a pack's record heads and payloads, as they are written). */
static PyObject *stream_update(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *state_obj, *pieces_obj;
    if (!PyArg_ParseTuple(args, "OO", &state_obj, &pieces_obj)) return NULL;
    PyObject *seq = PySequence_Fast(pieces_obj, "stream_update: pieces must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Py_buffer *views = PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(Py_buffer));
    if (views == NULL) { Py_DECREF(seq); return PyErr_NoMemory(); }
    Py_ssize_t held = 0;
    for (; held < n; held++)
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, held), &views[held], PyBUF_SIMPLE) < 0) break;
    Py_buffer sv;
    stream_head head;
    PyObject *out = NULL;
    if (held == n && stream_take(state_obj, &sv, &head) == 0) {
        uint8_t *buf = (uint8_t *)sv.buf + sizeof(stream_head);
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) stream_feed(&head, buf, views[i].buf, (size_t)views[i].len);
        Py_END_ALLOW_THREADS
        memcpy(sv.buf, &head, sizeof(head));
        PyBuffer_Release(&sv);
        out = Py_NewRef(Py_None);
    }
    for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&views[i]);
    PyMem_RawFree(views);
    Py_DECREF(seq);
    return out;
}

/* stream_digest(state) -> bytes: the digest of what was hashed so far (the state is unchanged). */
static PyObject *stream_digest(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    stream_head head;
    if (stream_take(arg, &view, &head) < 0) return NULL;
    blake3_hasher_update(&head.h, (const uint8_t *)view.buf + sizeof(stream_head), (size_t)head.buffered);
    PyBuffer_Release(&view);
    uint8_t out[BLAKE3_OUT_LEN];
    blake3_hasher_finalize(&head.h, out, BLAKE3_OUT_LEN);
    return PyBytes_FromStringAndSize((const char *)out, BLAKE3_OUT_LEN);
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

/* chunk_block(buf, filled, at_end, base, align, emitted, (min, avg, max, mask_s, mask_l, stride), key | None)
 *   -> (ends: list[int], ids: bytes | None, carry_from: int, done: bool) */
static PyObject *chunk_block(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *buf_obj, *key_obj;
    long long s_filled, s_base, s_align, s_emitted;  /* signed: "K" would wrap -1 to 2**64 - 1 unchecked */
    unsigned long long filled, base, align, emitted, min_size, avg_size, max_size, mask_s, mask_l, stride;
    int at_end;
    if (!PyArg_ParseTuple(args, "OLpLLL(KKKKKK)O", &buf_obj, &s_filled, &at_end, &s_base, &s_align, &s_emitted, &min_size,
                          &avg_size, &max_size, &mask_s, &mask_l, &stride, &key_obj))
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
    if (min_size < 64 || avg_size < min_size || max_size < avg_size || align < 1 || emitted > filled || stride > 64) {
        PyErr_SetString(PyExc_ValueError, "chunk_block: needs min_size >= 64, min_size <= avg_size <= max_size, align >= 1, "
                                          "emitted <= filled, stride <= 64");
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
    cdc_config c = {min_size, avg_size, max_size, mask_s, mask_l, mask_s << 1, mask_l << 1, stride};
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
    if (list == NULL || id_bytes == NULL) {
        Py_XDECREF(list); Py_XDECREF(id_bytes);
        return NULL;
    }
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


#if !defined(_WIN32)
/* verify_at(key, fd, offset, lengths, ids, buf) -> bool: whether the bytes of fd from
 * offset, cut at lengths, hash (keyed) to ids (32 bytes each); read into buf, as many
 * whole chunks a read as fit, each chunk checked before the next read. False at the
 * first chunk that differs and when the file ends early; OSError if a read fails.
 * The segment cache's verification of a tensor (objstore.files.ingest) in one call
 * with the GIL released throughout: with a read and a hash call per 2 MiB from Python,
 * two chunking threads and the writer handed the GIL back and forth, and verifying a
 * known tensor took twice its CPU time in wall time. */
static int read_full(int fd, uint8_t *dst, size_t len, uint64_t offset, size_t *got) {
    *got = 0;
    while (*got < len) {
        ssize_t n = pread(fd, dst + *got, len - *got, (off_t)(offset + *got));
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) break;  /* the file ends here */
        *got += (size_t)n;
    }
    return 0;
}

static PyObject *verify_at(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *key_obj, *lengths_obj, *ids_obj, *buf_obj;
    int fd;
    unsigned long long offset;
    if (!PyArg_ParseTuple(args, "OiKOOO", &key_obj, &fd, &offset, &lengths_obj, &ids_obj, &buf_obj)) return NULL;
    PyObject *seq = PySequence_Fast(lengths_obj, "verify_at: lengths must be a sequence of ints");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    uint64_t *lengths = PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(uint64_t));
    if (lengths == NULL) { Py_DECREF(seq); return PyErr_NoMemory(); }
    for (Py_ssize_t i = 0; i < n; i++) {
        lengths[i] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (PyErr_Occurred()) { PyMem_RawFree(lengths); Py_DECREF(seq); return NULL; }
    }
    Py_DECREF(seq);
    Py_buffer key, ids, buf;
    if (get_key(key_obj, &key) < 0) { PyMem_RawFree(lengths); return NULL; }
    if (PyObject_GetBuffer(ids_obj, &ids, PyBUF_SIMPLE) < 0) { PyBuffer_Release(&key); PyMem_RawFree(lengths); return NULL; }
    if (PyObject_GetBuffer(buf_obj, &buf, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&ids); PyBuffer_Release(&key); PyMem_RawFree(lengths);
        return NULL;
    }
    const char *bad = NULL;
    if (ids.len != n * BLAKE3_OUT_LEN) bad = "verify_at: ids must hold 32 bytes per length";
    for (Py_ssize_t i = 0; i < n && bad == NULL; i++)
        if (lengths[i] == 0 || lengths[i] > (uint64_t)buf.len) bad = "verify_at: every length must be between 1 and the buffer's size";
    PyObject *result = NULL;
    if (bad != NULL) {
        PyErr_SetString(PyExc_ValueError, bad);
    } else {
        int same = 1, err = 0;
        Py_BEGIN_ALLOW_THREADS
        uint64_t at = offset;
        Py_ssize_t i = 0;
        while (i < n && same) {
            size_t size = 0;
            Py_ssize_t j = i;
            while (j < n && size + lengths[j] <= (size_t)buf.len) size += lengths[j++];
            size_t got;
            if (read_full(fd, buf.buf, size, at, &got) < 0) { err = errno; break; }
            if (got != size) { same = 0; break; }
            size_t pos = 0;
            for (Py_ssize_t k = i; k < j && same; k++) {
                uint8_t digest[BLAKE3_OUT_LEN];
                hash_one(key.buf, (const uint8_t *)buf.buf + pos, (size_t)lengths[k], digest);
                same = memcmp(digest, (const uint8_t *)ids.buf + (size_t)k * BLAKE3_OUT_LEN, BLAKE3_OUT_LEN) == 0;
                pos += lengths[k];
            }
            at += size;
            i = j;
        }
        Py_END_ALLOW_THREADS
        if (err != 0) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
        } else {
            result = PyBool_FromLong(same);
        }
    }
    PyBuffer_Release(&buf);
    PyBuffer_Release(&ids);
    PyBuffer_Release(&key);
    PyMem_RawFree(lengths);
    return result;
}
#endif

/* -- decoding a run of stored chunks ----------------------------------------------------- */

enum { P_RAW = 0, P_ZSTD = 1, P_PACKED = 2 };

typedef struct {
    int word, rotate;
    Py_ssize_t m;
    int kind[4];
    size_t off[4], len[4];
    size_t tail_off, tail_len;
} bg_layout;

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24); }

/* The content size a zstd frame's header declares: 1 and *size if it declares one; 0 for
 * no size, a skippable or unknown frame, or a header too short (the reference decides those). */
static int zstd_declared(const uint8_t *p, size_t n, uint64_t *size) {
    if (n < 5 || rd32(p) != 0xFD2FB528u) return 0;
    uint8_t fhd = p[4];
    int fcs_flag = fhd >> 6, single = (fhd >> 5) & 1, did_flag = fhd & 3;
    if (fhd & 0x08) return 0;  /* reserved bit */
    static const size_t did_size[4] = {0, 1, 2, 4};
    size_t fcs_size = fcs_flag == 0 ? (size_t)single : (size_t)1 << fcs_flag;
    size_t pos = 5 + (single ? 0 : 1) + did_size[did_flag];
    if (fcs_size == 0 || n < pos + fcs_size) return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < fcs_size; i++) v |= (uint64_t)p[pos + i] << (8 * i);
    if (fcs_size == 2) v += 256;
    *size = v;
    return 1;
}

/* A bytegroup payload's layout (codecs 2-5), with the reference's checks: header, word,
 * plane masks, lengths, the tail, and every zstd plane declaring exactly m bytes. 0 if it
 * is one, -1 if not. */
static int bg_parse(int codec, const uint8_t *p, size_t n, uint64_t raw_len, bg_layout *L) {
    int word = (codec == 2 || codec == 4) ? 2 : 4;
    int three = codec >= 4;
    size_t pos = three ? 3 : 2;
    if (n < pos) return -1;
    int mask = p[1], packed = three ? p[2] : 0;
    if (p[0] != word || ((mask | packed) >> word) || (mask & packed)) return -1;
    L->word = word;
    L->rotate = three ? 3 : 0;
    L->m = (Py_ssize_t)(raw_len / (uint64_t)word);
    size_t m = (size_t)L->m;
    size_t lens[4] = {0, 0, 0, 0};
    for (int k = 0; k < word; k++) {
        if (mask >> k & 1) {
            if (pos + 4 > n) return -1;
            lens[k] = rd32(p + pos);
            pos += 4;
        }
    }
    for (int k = 0; k < word; k++) {
        size_t len;
        if (mask >> k & 1) { L->kind[k] = P_ZSTD; len = lens[k]; }
        else if (packed >> k & 1) { L->kind[k] = P_PACKED; len = 1 + 3 * ((m + 3) / 4); }
        else { L->kind[k] = P_RAW; len = m; }
        if (len > n - pos) return -1;
        L->off[k] = pos;
        L->len[k] = len;
        if (L->kind[k] == P_ZSTD) {
            uint64_t declared;
            if (!zstd_declared(p + pos, len, &declared) || declared != (uint64_t)m) return -1;
        } else if (L->kind[k] == P_PACKED && p[pos] > 3) {
            return -1;
        }
        pos += len;
    }
    if (n - pos != raw_len - (uint64_t)m * (uint64_t)word) return -1;
    L->tail_off = pos;
    L->tail_len = n - pos;
    return 0;
}

/* The run's arguments, held as buffers and C arrays. */
typedef struct {
    Py_ssize_t n;
    Py_buffer *bufs;
    long *codecs;
    uint64_t *raw_lens;
    int held;
} run_args;

static void run_release(run_args *r) {
    for (int i = 0; i < r->held; i++) PyBuffer_Release(&r->bufs[i]);
    PyMem_RawFree(r->bufs);
    PyMem_RawFree(r->codecs);
    PyMem_RawFree(r->raw_lens);
}

static int run_take(run_args *r, PyObject *payloads, PyObject *codecs, PyObject *raw_lens) {
    memset(r, 0, sizeof(*r));
    PyObject *ps = PySequence_Fast(payloads, "payloads must be a sequence");
    if (ps == NULL) return -1;
    PyObject *cs = PySequence_Fast(codecs, "codecs must be a sequence");
    PyObject *ls = cs ? PySequence_Fast(raw_lens, "raw_lens must be a sequence") : NULL;
    int rc = -1;
    if (ls == NULL) goto out;
    r->n = PySequence_Fast_GET_SIZE(ps);
    if (PySequence_Fast_GET_SIZE(cs) != r->n || PySequence_Fast_GET_SIZE(ls) != r->n) {
        PyErr_SetString(PyExc_ValueError, "payloads, codecs and raw_lens differ in length");
        goto out;
    }
    size_t cap = (size_t)(r->n ? r->n : 1);
    r->bufs = PyMem_RawCalloc(cap, sizeof(Py_buffer));
    r->codecs = PyMem_RawMalloc(cap * sizeof(long));
    r->raw_lens = PyMem_RawMalloc(cap * sizeof(uint64_t));
    if (!r->bufs || !r->codecs || !r->raw_lens) { PyErr_NoMemory(); goto out; }
    for (Py_ssize_t i = 0; i < r->n; i++) {
        r->codecs[i] = PyLong_AsLong(PySequence_Fast_GET_ITEM(cs, i));
        long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(ls, i));
        if (PyErr_Occurred()) goto out;
        r->raw_lens[i] = v < 0 ? UINT64_MAX : (uint64_t)v;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(ps, i), &r->bufs[i], PyBUF_SIMPLE) < 0) goto out;
        r->held++;
    }
    rc = 0;
out:
    Py_DECREF(ps);
    Py_XDECREF(cs);
    Py_XDECREF(ls);
    return rc;
}

/* run_frames(payloads, codecs, raw_lens, max_raw, max_stored) -> (frames, sizes) | None:
 * the zstd frames of the run in order (slices of the payloads) and the size each must
 * decode to (a list of ints); None if any chunk
 * is not in a form this path decodes (the reference then decides). */
static PyObject *run_frames(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *payloads, *codecs, *raw_lens;
    unsigned long long max_raw, max_stored;
    if (!PyArg_ParseTuple(args, "OOOKK", &payloads, &codecs, &raw_lens, &max_raw, &max_stored)) return NULL;
    run_args r;
    if (run_take(&r, payloads, codecs, raw_lens) < 0) { run_release(&r); return NULL; }
    PyObject *ps = PySequence_Fast(payloads, "payloads must be a sequence");
    PyObject *frames = PyList_New(0), *result = NULL;
    uint64_t *sizes = PyMem_RawMalloc((size_t)(4 * r.n + 1) * sizeof(uint64_t));
    size_t nf = 0;
    int ok = 1;
    if (ps == NULL || frames == NULL || sizes == NULL) { if (!PyErr_Occurred()) PyErr_NoMemory(); goto out; }
    for (Py_ssize_t i = 0; i < r.n && ok; i++) {
        const uint8_t *p = r.bufs[i].buf;
        size_t n = (size_t)r.bufs[i].len;
        uint64_t raw = r.raw_lens[i];
        if (raw > max_raw || n > max_stored) { ok = 0; break; }
        long c = r.codecs[i];
        size_t starts[4], lens[4];
        int nz = 0;
        if (c == 0) {
            if (n != raw) ok = 0;
        } else if (c == 1) {
            uint64_t declared;
            if (!zstd_declared(p, n, &declared) || declared != raw) ok = 0;
            else { starts[0] = 0; lens[0] = n; sizes[nf] = raw; nz = 1; }
        } else if (c >= 2 && c <= 5) {
            bg_layout L;
            if (bg_parse((int)c, p, n, raw, &L) < 0) ok = 0;
            else {
                for (int k = 0; k < L.word; k++) {
                    if (L.kind[k] == P_ZSTD) { starts[nz] = L.off[k]; lens[nz] = L.len[k]; sizes[nf + (size_t)nz] = (uint64_t)L.m; nz++; }
                }
            }
        } else {
            ok = 0;
        }
        for (int j = 0; ok && j < nz; j++) {
            PyObject *slice = PySequence_GetSlice(PySequence_Fast_GET_ITEM(ps, i), (Py_ssize_t)starts[j], (Py_ssize_t)(starts[j] + lens[j]));
            if (slice == NULL || PyList_Append(frames, slice) < 0) { Py_XDECREF(slice); goto out; }
            Py_DECREF(slice);
        }
        nf += (size_t)nz;
    }
    if (!ok) { result = Py_NewRef(Py_None); goto out; }
    PyObject *size_list = ends_list(sizes, nf);
    if (size_list != NULL) result = Py_BuildValue("(ON)", frames, size_list);
out:
    Py_XDECREF(ps);
    Py_XDECREF(frames);
    PyMem_RawFree(sizes);
    run_release(&r);
    return result;
}

/* finish_run(key, payloads, codecs, raw_lens, ids, decoded, max_raw, out) -> int: writes
 * the raw bytes of the run's chunks back to back into the writable buffer out, each
 * checked to hash (keyed) to its id in ids (32 bytes each); -1 if all are, else the index
 * of the first chunk that fails a check (out then holds garbage). decoded: the outputs
 * of the frames run_frames listed, in order. */
static PyObject *finish_run(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *key_obj, *payloads, *codecs, *raw_lens, *ids_obj, *decoded, *out_obj;
    unsigned long long max_raw;
    if (!PyArg_ParseTuple(args, "OOOOOOKO", &key_obj, &payloads, &codecs, &raw_lens, &ids_obj, &decoded, &max_raw, &out_obj))
        return NULL;
    run_args r;
    if (run_take(&r, payloads, codecs, raw_lens) < 0) { run_release(&r); return NULL; }
    Py_buffer key = {0}, ids = {0}, outbuf = {0};
    Py_buffer *frames = NULL;
    Py_ssize_t nframes = 0, held_frames = 0;
    PyObject *result = NULL;
    uint8_t *scratch = NULL;
    int have_key = 0, have_ids = 0, have_out = 0;
    if (get_key(key_obj, &key) < 0) goto done;
    have_key = 1;
    if (PyObject_GetBuffer(ids_obj, &ids, PyBUF_SIMPLE) < 0) goto done;
    have_ids = 1;
    if (ids.len != r.n * BLAKE3_OUT_LEN) { PyErr_SetString(PyExc_ValueError, "finish_run: ids must hold 32 bytes per chunk"); goto done; }
    nframes = PySequence_Length(decoded);
    if (nframes < 0) goto done;
    frames = PyMem_RawCalloc((size_t)(nframes ? nframes : 1), sizeof(Py_buffer));
    if (frames == NULL) { PyErr_NoMemory(); goto done; }
    for (; held_frames < nframes; held_frames++) {
        PyObject *item = PySequence_GetItem(decoded, held_frames);
        if (item == NULL) goto done;
        int rc = PyObject_GetBuffer(item, &frames[held_frames], PyBUF_SIMPLE);
        Py_DECREF(item);
        if (rc < 0) goto done;
    }
    uint64_t total = 0, max_m = 0;
    for (Py_ssize_t i = 0; i < r.n; i++) {
        if (r.raw_lens[i] > max_raw || r.raw_lens[i] > (uint64_t)PY_SSIZE_T_MAX - total) {
            PyErr_SetString(PyExc_ValueError, "finish_run: a chunk is longer than any chunk can be");
            goto done;
        }
        total += r.raw_lens[i];
        if (r.raw_lens[i] / 2 > max_m) max_m = r.raw_lens[i] / 2;
    }
    /* into the caller's buffer, which it reuses run after run: a fresh run-sized buffer
     * each time costs a page fault per 4 KiB written (measured: 2.5x the faults of the
     * chunk-by-chunk reference) */
    if (PyObject_GetBuffer(out_obj, &outbuf, PyBUF_WRITABLE) < 0) goto done;
    have_out = 1;
    if ((uint64_t)outbuf.len < total) { PyErr_SetString(PyExc_ValueError, "finish_run: the output buffer is too small"); goto done; }
    scratch = PyMem_RawMalloc((size_t)max_m + 1);
    if (scratch == NULL) { PyErr_NoMemory(); goto done; }
    uint8_t *dst = (uint8_t *)outbuf.buf;
    Py_ssize_t bad = -1;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t f = 0;
    uint64_t off = 0;
    for (Py_ssize_t i = 0; i < r.n && bad < 0; i++) {
        const uint8_t *p = r.bufs[i].buf;
        size_t n = (size_t)r.bufs[i].len;
        uint64_t raw = r.raw_lens[i];
        long c = r.codecs[i];
        uint8_t *d = dst + off;
        if (c == 0) {
            if (n != raw) { bad = i; break; }
            memcpy(d, p, n);
        } else if (c == 1) {
            if (f >= nframes || (uint64_t)frames[f].len != raw) { bad = i; break; }
            memcpy(d, frames[f].buf, (size_t)raw);
            f++;
        } else {
            bg_layout L;
            if (c < 2 || c > 5 || bg_parse((int)c, p, n, raw, &L) < 0) { bad = i; break; }
            const uint8_t *planes[4] = {NULL, NULL, NULL, NULL};
            int used_scratch = 0;
            for (int k = 0; k < L.word && bad < 0; k++) {
                if (L.kind[k] == P_ZSTD) {
                    if (f >= nframes || frames[f].len != L.m) bad = i;
                    else planes[k] = frames[f++].buf;
                } else if (L.kind[k] == P_PACKED) {
                    /* bytegroup codecs pack plane 0 only; a second packed plane takes the reference path */
                    if (used_scratch || (uint64_t)L.m > max_m ||
                        !unpack6_into(p + L.off[k] + 1, (Py_ssize_t)L.len[k] - 1, p[L.off[k]], L.m, scratch)) bad = i;
                    else { planes[k] = scratch; used_scratch = 1; }
                } else {
                    planes[k] = p + L.off[k];
                }
            }
            if (bad >= 0) break;
            if (L.word == 2) merge2(d, L.m, L.rotate, planes[0], planes[1]);
            else merge4(d, L.m, L.rotate, planes[0], planes[1], planes[2], planes[3]);
            if (L.tail_len) memcpy(d + (size_t)L.m * (size_t)L.word, p + L.tail_off, L.tail_len);
        }
        uint8_t digest[BLAKE3_OUT_LEN];
        hash_one(key.buf, d, (size_t)raw, digest);
        if (memcmp(digest, (const uint8_t *)ids.buf + (size_t)BLAKE3_OUT_LEN * (size_t)i, BLAKE3_OUT_LEN) != 0) { bad = i; break; }
        off += raw;
    }
    if (bad < 0 && f != nframes) bad = r.n ? r.n - 1 : 0;  /* frames left over: the plan was not this run's */
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(bad);
done:
    if (have_out) PyBuffer_Release(&outbuf);
    PyMem_RawFree(scratch);
    for (Py_ssize_t k = 0; k < held_frames; k++) PyBuffer_Release(&frames[k]);
    PyMem_RawFree(frames);
    if (have_ids) PyBuffer_Release(&ids);
    if (have_key) PyBuffer_Release(&key);
    run_release(&r);
    return result;
}

/* ---- decode_run: finish_run with the zstd frames decoded here too (issue 12) ---- */
#include "../planes/zstd_decoder.h"

/* One stored chunk's raw bytes into d (raw bytes), with the checks run_frames and
 * finish_run make; its zstd frames decoded by z, into scratch (room for raw bytes).
 * 0 if it decoded, -1 if it is damaged or in a form only the reference decodes. */
static int decode_one(const objstore_zstd_decoder *z, void *dctx, const uint8_t *p, size_t n, uint64_t raw, long c,
                      uint8_t *d, uint8_t *scratch) {
    uint64_t declared;
    if (c == 0) {
        if (n != raw) return -1;
        memcpy(d, p, n);
        return 0;
    }
    if (c == 1) return zstd_declared(p, n, &declared) && declared == raw ? z->decode_exact(dctx, d, (size_t)raw, p, n) : -1;
    bg_layout L;
    if (c < 2 || c > 5 || bg_parse((int)c, p, n, raw, &L) < 0) return -1;
    const uint8_t *planes[4] = {NULL, NULL, NULL, NULL};
    uint8_t *room = scratch;  /* the decoded planes side by side: word * m <= raw bytes */
    size_t m = (size_t)L.m;
    int packed = 0;
    for (int k = 0; k < L.word; k++) {
        if (L.kind[k] == P_ZSTD) {
            if (z->decode_exact(dctx, room, m, p + L.off[k], L.len[k]) < 0) return -1;
        } else if (L.kind[k] == P_PACKED) {
            /* bytegroup codecs pack plane 0 only; a second packed plane takes the reference path */
            if (packed++ || !unpack6_into(p + L.off[k] + 1, (Py_ssize_t)L.len[k] - 1, p[L.off[k]], L.m, room)) return -1;
        } else {
            planes[k] = p + L.off[k];
            continue;
        }
        planes[k] = room;
        room += m;
    }
    if (L.word == 2) merge2(d, L.m, L.rotate, planes[0], planes[1]);
    else merge4(d, L.m, L.rotate, planes[0], planes[1], planes[2], planes[3]);
    if (L.tail_len) memcpy(d + m * (size_t)L.word, p + L.tail_off, L.tail_len);
    return 0;
}

/* Decompression contexts kept between decode_run calls: making one per run (a
 * restore makes ~700 per GiB) cost ~1% of a restore's CPU in ZSTD_createDCtx and
 * the page faults of its fresh workspace. A context holds no state between frames
 * that a later frame could see (ZSTD_decompressDCtx starts each frame afresh), so
 * any thread may take any kept one. Each slot is taken and given back with one
 * atomic exchange; at most DCTX_KEPT are kept (one per decode thread suffices). */
#define DCTX_KEPT 8
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_ATOMICS__)
#include <stdatomic.h>
static _Atomic(void *) dctx_kept[DCTX_KEPT];

static void *dctx_take(const objstore_zstd_decoder *z) {
    for (int i = 0; i < DCTX_KEPT; i++) {
        void *dctx = atomic_exchange(&dctx_kept[i], NULL);
        if (dctx != NULL) return dctx;
    }
    return z->create();
}

static void dctx_give(const objstore_zstd_decoder *z, void *dctx) {
    for (int i = 0; i < DCTX_KEPT; i++) {
        void *empty = NULL;
        if (atomic_compare_exchange_strong(&dctx_kept[i], &empty, dctx)) return;
    }
    z->destroy(dctx);
}
#else
static void *dctx_take(const objstore_zstd_decoder *z) { return z->create(); }
static void dctx_give(const objstore_zstd_decoder *z, void *dctx) { z->destroy(dctx); }
#endif

/* decode_run(key, payloads, codecs, raw_lens, ids, max_raw, max_stored, out, decoder) -> int:
 * what run_frames + python-zstandard + finish_run do, in one call and none of it under
 * the GIL: each chunk decoded (its zstd frames by the vendored zstd that decoder, the
 * capsule _planes.zstd_decoder, lends), merged into out back to back and checked to
 * hash (keyed) to its id before the next; -1 if all did, else the index of the first
 * chunk that did not or that only the reference decodes (out then holds garbage). */
static PyObject *decode_run(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *key_obj, *payloads, *codecs, *raw_lens, *ids_obj, *out_obj, *cap;
    unsigned long long max_raw, max_stored;
    if (!PyArg_ParseTuple(args, "OOOOOKKOO", &key_obj, &payloads, &codecs, &raw_lens, &ids_obj, &max_raw, &max_stored,
                          &out_obj, &cap))
        return NULL;
    const objstore_zstd_decoder *z = PyCapsule_GetPointer(cap, OBJSTORE_ZSTD_DECODER_CAPSULE);
    if (z == NULL) return NULL;
    run_args r;
    if (run_take(&r, payloads, codecs, raw_lens) < 0) { run_release(&r); return NULL; }
    Py_buffer key = {0}, ids = {0}, outbuf = {0};
    int have_key = 0, have_ids = 0, have_out = 0;
    PyObject *result = NULL;
    uint8_t *scratch = NULL;
    void *dctx = NULL;
    if (get_key(key_obj, &key) < 0) goto done;
    have_key = 1;
    if (PyObject_GetBuffer(ids_obj, &ids, PyBUF_SIMPLE) < 0) goto done;
    have_ids = 1;
    if (ids.len != r.n * BLAKE3_OUT_LEN) { PyErr_SetString(PyExc_ValueError, "decode_run: ids must hold 32 bytes per chunk"); goto done; }
    if (PyObject_GetBuffer(out_obj, &outbuf, PyBUF_WRITABLE) < 0) goto done;
    have_out = 1;
    Py_ssize_t bad = -1;
    uint64_t total = 0, biggest = 0;
    for (Py_ssize_t i = 0; i < r.n && bad < 0; i++) {
        /* a length no chunk can have is refused before anything is allocated for it */
        if (r.raw_lens[i] > max_raw || (uint64_t)r.bufs[i].len > max_stored) bad = i;
        else { total += r.raw_lens[i]; if (r.raw_lens[i] > biggest) biggest = r.raw_lens[i]; }
    }
    if (bad < 0 && (uint64_t)outbuf.len < total) { PyErr_SetString(PyExc_ValueError, "decode_run: the output buffer is too small"); goto done; }
    if (bad < 0) {
        scratch = PyMem_RawMalloc((size_t)biggest + 1);
        dctx = dctx_take(z);
        if (scratch == NULL || dctx == NULL) { PyErr_NoMemory(); goto done; }
    }
    uint8_t *dst = (uint8_t *)outbuf.buf;
    Py_BEGIN_ALLOW_THREADS
    uint64_t off = 0;
    for (Py_ssize_t i = 0; i < r.n && bad < 0; i++) {
        uint8_t *d = dst + off;
        uint64_t raw = r.raw_lens[i];
        uint8_t digest[BLAKE3_OUT_LEN];
        if (decode_one(z, dctx, r.bufs[i].buf, (size_t)r.bufs[i].len, raw, r.codecs[i], d, scratch) < 0) { bad = i; break; }
        hash_one(key.buf, d, (size_t)raw, digest);
        if (memcmp(digest, (const uint8_t *)ids.buf + (size_t)BLAKE3_OUT_LEN * (size_t)i, BLAKE3_OUT_LEN) != 0) { bad = i; break; }
        off += raw;
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(bad);
done:
    if (dctx != NULL) dctx_give(z, dctx);
    PyMem_RawFree(scratch);
    if (have_out) PyBuffer_Release(&outbuf);
    if (have_ids) PyBuffer_Release(&ids);
    if (have_key) PyBuffer_Release(&key);
    run_release(&r);
    return result;
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
#if !defined(_WIN32)
    {"verify_at", verify_at, METH_VARARGS, "Whether a file's bytes from an offset, cut at given lengths, hash to given ids."},
#endif
    {"stream_new", stream_new, METH_O, "The state of one keyed BLAKE3 stream (pack checksums)."},
    {"stream_update", stream_update, METH_VARARGS, "Hash a sequence of buffers into a stream, GIL released."},
    {"stream_digest", stream_digest, METH_O, "The digest of a stream so far."},
    {"run_frames", run_frames, METH_VARARGS, "The zstd frames of a run of stored chunks, or None."},
    {"finish_run", finish_run, METH_VARARGS, "Merge, unpack and verify a run of chunks into one buffer."},
    {"decode_run", decode_run, METH_VARARGS, "Decode (vendored zstd), merge, unpack and verify a run of chunks into one buffer."},
    {"simd", simd, METH_NOARGS, "The BLAKE3 SIMD implementation in use."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "objstore's compiled ingest core.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
