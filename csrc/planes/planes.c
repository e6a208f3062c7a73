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

/* ---- encode-side transforms, with AVX2 / BMI2 versions picked at run time ----
 * Each wide version writes exactly the bytes of the portable loop (transforms.h, and
 * pack6_into below), which does the ends it leaves and runs where the CPU lacks them. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#define OBJSTORE_X86_DISPATCH 1
#include <immintrin.h>

static int have_avx2, have_bmi2;

__attribute__((target("avx2"))) static Py_ssize_t split2_avx2(const uint8_t *src, Py_ssize_t m, int r, uint8_t *p0,
                                                               uint8_t *p1) {
    /* per 128-bit lane: the 8 low bytes of its words, then the 8 high bytes */
    const __m256i gather = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14,
                                            1, 3, 5, 7, 9, 11, 13, 15);
    const __m128i left = _mm_cvtsi32_si128(r), right = _mm_cvtsi32_si128(16 - r); /* a shift by 16 gives 0 */
    Py_ssize_t i = 0;
    for (; i + 16 <= m; i += 16) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(src + 2 * i));
        w = _mm256_or_si256(_mm256_sll_epi16(w, left), _mm256_srl_epi16(w, right));
        w = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(w, gather), 0xD8);
        _mm_storeu_si128((__m128i *)(p0 + i), _mm256_castsi256_si128(w));
        _mm_storeu_si128((__m128i *)(p1 + i), _mm256_extracti128_si256(w, 1));
    }
    return i;
}

__attribute__((target("avx2"))) static Py_ssize_t split4_avx2(const uint8_t *src, Py_ssize_t m, int r, uint8_t *p0,
                                                               uint8_t *p1, uint8_t *p2, uint8_t *p3) {
    /* per lane: byte 0 of its 4 words, then byte 1, 2, 3; then the lanes' dwords interleaved */
    const __m256i gather = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9, 13,
                                            2, 6, 10, 14, 3, 7, 11, 15);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m128i left = _mm_cvtsi32_si128(r), right = _mm_cvtsi32_si128(32 - r);
    Py_ssize_t i = 0;
    for (; i + 8 <= m; i += 8) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(src + 4 * i));
        w = _mm256_or_si256(_mm256_sll_epi32(w, left), _mm256_srl_epi32(w, right));
        w = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(w, gather), order);
        __m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
        _mm_storel_epi64((__m128i *)(p0 + i), lo);
        _mm_storel_epi64((__m128i *)(p1 + i), _mm_unpackhi_epi64(lo, lo));
        _mm_storel_epi64((__m128i *)(p2 + i), hi);
        _mm_storel_epi64((__m128i *)(p3 + i), _mm_unpackhi_epi64(hi, hi));
    }
    return i;
}

__attribute__((target("avx2"))) static int pack6_applies_avx2(const uint8_t *p, Py_ssize_t m) {
    uint8_t low = m ? (uint8_t)(p[0] & 3) : 0;
    uint8_t diff = 0;
    for (Py_ssize_t i = 0; i < m; i++) diff |= (uint8_t)(p[i] ^ low); /* vectorized 32 bytes wide */
    return (diff & 3) == 0;
}

/* Groups (of 4 plane bytes) pack6_into's main loop leaves to its portable tail. */
__attribute__((target("bmi2"))) static Py_ssize_t pack6_pairs_bmi2(const uint8_t *p, Py_ssize_t full, Py_ssize_t groups,
                                                                   uint8_t *d) {
    Py_ssize_t g = 0;
    for (; g + 2 <= full && 3 * g + 8 <= 3 * groups; g += 2) {
        uint64_t q;
        memcpy(&q, p + 4 * g, 8);
        uint64_t v = le64(_pext_u64(le64(q), 0xFCFCFCFCFCFCFCFCull)); /* each byte's high 6 bits, first lowest */
        memcpy(d + 3 * g, &v, 8);
    }
    return g;
}
#endif

static void split2_fast(const uint8_t *src, Py_ssize_t m, int r, uint8_t *p0, uint8_t *p1) {
    Py_ssize_t done = 0;
#ifdef OBJSTORE_X86_DISPATCH
    if (have_avx2) done = split2_avx2(src, m, r, p0, p1);
#endif
    split2(src + 2 * done, m - done, r, p0 + done, p1 + done);
}

static void split4_fast(const uint8_t *src, Py_ssize_t m, int r, uint8_t *p0, uint8_t *p1, uint8_t *p2, uint8_t *p3) {
    Py_ssize_t done = 0;
#ifdef OBJSTORE_X86_DISPATCH
    if (have_avx2) done = split4_avx2(src, m, r, p0, p1, p2, p3);
#endif
    split4(src + 4 * done, m - done, r, p0 + done, p1 + done, p2 + done, p3 + done);
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
        split2_fast(src, m, rotate, p[0], p[1]);
    else
        split4_fast(src, m, rotate, p[0], p[1], p[2], p[3]);
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

/* Whether every byte of the m-byte plane p has the same low 2 bits (no early exit:
 * an OR over the whole plane vectorizes, and planes that pack are the common case). */
static int pack6_applies(const uint8_t *p, Py_ssize_t m) {
#ifdef OBJSTORE_X86_DISPATCH
    if (have_avx2) return pack6_applies_avx2(p, m);
#endif
    uint8_t low = m ? (uint8_t)(p[0] & 3) : 0;
    uint8_t diff = 0;
    for (Py_ssize_t i = 0; i < m; i++) diff |= (uint8_t)(p[i] ^ low);
    return (diff & 3) == 0;
}

static Py_ssize_t packed6_size(Py_ssize_t m) { return 1 + 3 * (m / 4 + (m % 4 != 0)); }

/* pack6's bytes of the m-byte plane p (pack6_applies holds) into d, packed6_size(m) bytes. */
static void pack6_into(const uint8_t *p, Py_ssize_t m, uint8_t *d) {
    Py_ssize_t groups = (m + 3) / 4;
    d[0] = m ? (uint8_t)(p[0] & 3) : 0;
    d++;
    Py_ssize_t full = m / 4;
    Py_ssize_t g = 0;
#ifdef OBJSTORE_X86_DISPATCH
    if (have_bmi2) g = pack6_pairs_bmi2(p, full, groups, d);
#endif
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
}

static PyObject *planes_pack6(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer in;
    if (!PyArg_ParseTuple(args, "y*", &in)) return NULL;
    const uint8_t *p = (const uint8_t *)in.buf;
    Py_ssize_t m = in.len;
    int same;
    Py_BEGIN_ALLOW_THREADS
    same = pack6_applies(p, m);
    Py_END_ALLOW_THREADS
    if (!same) {
        PyBuffer_Release(&in);
        Py_RETURN_NONE;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, packed6_size(m));
    if (!out) {
        PyBuffer_Release(&in);
        return NULL;
    }
    uint8_t *d = (uint8_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    pack6_into(p, m, d);
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

/* ---- the batch encoder: a block's chunks split and packed in one call, assembled in another ----
 *
 * split_batch(raws, word, rotate, try_mask, pack6_mask, min_words, scratch) -> (plan, segments)
 *     For each chunk of at least min_words whole words: its planes (as split() makes
 *     them) written into scratch, each plane k of pack6_mask packed (pack6()) into
 *     scratch when its low bits agree, and each other plane of try_mask queued for
 *     the entropy coder. `segments` lists the queued planes as (offset, length)
 *     u64 pairs into scratch, chunk by chunk, planes in order (the layout
 *     zstandard.BufferWithSegments takes); `plan` (a capsule) remembers the rest.
 *     pack6_mask < 0: the codec has no packed planes (the two-byte header of ids 2, 3).
 *     scratch must hold split_batch_scratch(raws, word, pack6_mask) bytes.
 * assemble_batch(plan, raws, scratch, frames, min_saving) -> list of bytes or None
 *     Each chunk's payload exactly as ByteGroupCodec.encode writes it, given the
 *     coder's output for each queued plane (frames, in segments' order): a frame
 *     is kept when it saves min_saving of its plane, else the plane is stored raw.
 *     None where ByteGroupCodec.encode would answer None (too short, nothing paid)
 *     or encode_chunk would store the chunk raw (the payload saves < min_saving).
 * All loops run without the GIL. */

typedef struct {
    Py_ssize_t len;           /* raw bytes */
    Py_ssize_t m;             /* whole words; the chunk is skipped when below min_words */
    Py_ssize_t planes_off;    /* offset of plane 0 in scratch; plane k at planes_off + k * m */
    Py_ssize_t packed_off[4]; /* where plane k's pack6 bytes are in scratch */
    uint8_t packed;           /* planes packed */
    uint8_t queued;           /* planes handed to the coder */
    uint8_t skip;
} chunk_plan;

typedef struct {
    Py_ssize_t n, queued, scratch_need;
    int word, rotate, pack6_mask;
    chunk_plan c[];
} batch_plan;

static const char PLAN_NAME[] = "objstore.storage._planes.batch_plan";

static void plan_free(PyObject *capsule) { PyMem_RawFree(PyCapsule_GetPointer(capsule, PLAN_NAME)); }

static void release_all(Py_buffer *bufs, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
}

/* Buffers of every item of seq (a new array; NULL with an exception set). */
static Py_buffer *get_all(PyObject *fast, Py_ssize_t n) {
    Py_buffer *bufs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    if (!bufs) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, i), &bufs[i], PyBUF_SIMPLE) < 0) {
            release_all(bufs, i);
            return NULL;
        }
    }
    return bufs;
}

/* seq as a fast sequence (*fast, a new reference the caller releases) and the buffers
   of its *n items (a new array; NULL with an exception set). */
static Py_buffer *get_raws(PyObject *seq, PyObject **fast, Py_ssize_t *n) {
    *fast = PySequence_Fast(seq, "raws must be a sequence");
    if (!*fast) return NULL;
    *n = PySequence_Fast_GET_SIZE(*fast);
    return get_all(*fast, *n);
}

/* 0 if the plane masks name only planes a word of this size has; -1 with ValueError. */
static int check_masks(int word, int try_mask, int pack6_mask) {
    if (try_mask < 0 || try_mask >> word || pack6_mask < -1 || (pack6_mask >= 0 && pack6_mask >> word)) {
        PyErr_SetString(PyExc_ValueError, "plane masks name planes the word does not have");
        return -1;
    }
    return 0;
}

/* Scratch bytes split_batch needs for chunks of these lengths (-1 on overflow). */
static Py_ssize_t scratch_for(const Py_buffer *bufs, Py_ssize_t n, int word, int pack6_mask) {
    Py_ssize_t need = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t m = bufs[i].len / word, add = m * word;
        for (int k = 0; k < word; k++)
            if (pack6_mask >= 0 && (pack6_mask >> k & 1)) add += packed6_size(m);
        if (need > PY_SSIZE_T_MAX - add) return -1;
        need += add;
    }
    return need;
}

static PyObject *planes_split_batch(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *seq;
    int word, rotate, try_mask, pack6_mask;
    Py_ssize_t min_words;
    Py_buffer scratch;
    if (!PyArg_ParseTuple(args, "Oiiiinw*", &seq, &word, &rotate, &try_mask, &pack6_mask, &min_words, &scratch)) return NULL;
    PyObject *result = NULL, *fast = NULL, *capsule = NULL, *segments = NULL;
    Py_buffer *bufs = NULL;
    batch_plan *plan = NULL;
    Py_ssize_t n = 0;
    if (check_word(word, rotate) < 0 || check_masks(word, try_mask, pack6_mask) < 0) goto done;
    bufs = get_raws(seq, &fast, &n);
    if (!bufs) goto done;
    Py_ssize_t need = scratch_for(bufs, n, word, pack6_mask);
    if (need < 0 || scratch.len < need) {
        PyErr_Format(PyExc_ValueError, "the scratch buffer holds %zd bytes, %zd needed", scratch.len, need);
        goto done;
    }
    if ((size_t)n > (PY_SSIZE_T_MAX - sizeof(batch_plan)) / sizeof(chunk_plan) / 8) {
        PyErr_NoMemory();
        goto done;
    }
    plan = PyMem_RawCalloc(1, sizeof(batch_plan) + (size_t)n * sizeof(chunk_plan));
    /* at most word u64 pairs per chunk */
    segments = PyBytes_FromStringAndSize(NULL, 16 * word * n);
    if (!plan || !segments) {
        if (!plan) PyErr_NoMemory();
        goto done;
    }
    plan->n = n;
    plan->word = word;
    plan->rotate = rotate;
    plan->pack6_mask = pack6_mask;
    plan->scratch_need = need;
    uint8_t *base = (uint8_t *)scratch.buf;
    uint64_t *seg = (uint64_t *)PyBytes_AS_STRING(segments);
    Py_ssize_t queued = 0;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t pos = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        chunk_plan *c = &plan->c[i];
        Py_ssize_t m = bufs[i].len / word;
        c->len = bufs[i].len;
        c->m = m;
        c->skip = m < min_words;
        c->planes_off = pos;
        uint8_t *p = base + pos;
        pos += m * word;
        if (c->skip) continue;
        const uint8_t *src = (const uint8_t *)bufs[i].buf;
        if (word == 2)
            split2_fast(src, m, rotate, p, p + m);
        else
            split4_fast(src, m, rotate, p, p + m, p + 2 * m, p + 3 * m);
        for (int k = 0; k < word; k++) {
            const uint8_t *plane = p + k * m;
            if (pack6_mask >= 0 && (pack6_mask >> k & 1)) {
                c->packed_off[k] = pos;
                pos += packed6_size(m);
                if (pack6_applies(plane, m)) {
                    pack6_into(plane, m, base + c->packed_off[k]);
                    c->packed |= (uint8_t)(1 << k);
                    continue;
                }
            }
            if (try_mask >> k & 1) {
                c->queued |= (uint8_t)(1 << k);
                seg[2 * queued] = (uint64_t)(c->planes_off + k * m);
                seg[2 * queued + 1] = (uint64_t)m;
                queued++;
            }
        }
    }
    Py_END_ALLOW_THREADS
    plan->queued = queued;
    if (_PyBytes_Resize(&segments, 16 * queued) < 0) goto done; /* frees segments on failure */
    capsule = PyCapsule_New(plan, PLAN_NAME, plan_free);
    if (!capsule) goto done;
    plan = NULL; /* the capsule's now */
    result = PyTuple_Pack(2, capsule, segments);
done:
    if (bufs) release_all(bufs, n);
    Py_XDECREF(fast);
    Py_XDECREF(capsule);
    Py_XDECREF(segments);
    PyMem_RawFree(plan);
    PyBuffer_Release(&scratch);
    return result;
}

static PyObject *planes_split_batch_scratch(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *seq;
    int word, pack6_mask;
    if (!PyArg_ParseTuple(args, "Oii", &seq, &word, &pack6_mask)) return NULL;
    if (check_word(word, 0) < 0) return NULL;
    PyObject *fast = PySequence_Fast(seq, "raws must be a sequence");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Py_buffer *bufs = get_all(fast, n);
    Py_DECREF(fast);
    if (!bufs) return NULL;
    Py_ssize_t need = scratch_for(bufs, n, word, pack6_mask);
    release_all(bufs, n);
    if (need < 0) return PyErr_NoMemory();
    return PyLong_FromSsize_t(need);
}

typedef struct {
    uint8_t *dst;
    Py_ssize_t frame[4]; /* index into frames of plane k's coded bytes, -1: stored as it is */
} chunk_out;

static PyObject *planes_assemble_batch(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *capsule, *seq, *frames_seq;
    Py_buffer scratch;
    double min_saving;
    if (!PyArg_ParseTuple(args, "OOy*Od", &capsule, &seq, &scratch, &frames_seq, &min_saving)) return NULL;
    PyObject *result = NULL, *fast = NULL, *ffast = NULL;
    Py_buffer *bufs = NULL, *frames = NULL;
    chunk_out *outs = NULL;
    Py_ssize_t n = 0, nf = 0;
    batch_plan *plan = PyCapsule_GetPointer(capsule, PLAN_NAME);
    if (!plan) goto done;
    fast = PySequence_Fast(seq, "raws must be a sequence");
    if (!fast) goto done;
    n = PySequence_Fast_GET_SIZE(fast);
    ffast = PySequence_Fast(frames_seq, "frames must be a sequence");
    if (!ffast) goto done;
    nf = PySequence_Fast_GET_SIZE(ffast);
    if (n != plan->n || nf != plan->queued || scratch.len < plan->scratch_need) {
        PyErr_SetString(PyExc_ValueError, "assemble_batch needs the raws, scratch and frames of its split_batch");
        n = nf = 0;
        goto done;
    }
    bufs = get_all(fast, n);
    if (!bufs) {
        n = nf = 0;
        goto done;
    }
    frames = get_all(ffast, nf);
    if (!frames) {
        nf = 0;
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (bufs[i].len != plan->c[i].len) {
            PyErr_SetString(PyExc_ValueError, "assemble_batch needs the raws of its split_batch");
            goto done;
        }
    }
    outs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(chunk_out));
    result = PyList_New(n);
    if (!outs || !result) {
        if (!outs) PyErr_NoMemory();
        goto done;
    }
    const int w = plan->word;
    const int head = plan->pack6_mask < 0 ? 2 : 3;
    Py_ssize_t f = 0;
    /* sizes first (under the GIL: the payloads are allocated here), bytes after, without it */
    for (Py_ssize_t i = 0; i < n; i++) {
        chunk_plan *c = &plan->c[i];
        Py_ssize_t m = c->m, size = head;
        uint8_t mask = 0;
        double limit = (double)m * (1.0 - min_saving);
        for (int k = 0; k < w; k++) {
            outs[i].frame[k] = -1;
            if (c->packed >> k & 1) {
                size += packed6_size(m);
            } else if (c->queued >> k & 1) {
                Py_ssize_t got = frames[f].len;
                if ((double)got <= limit) {
                    mask |= (uint8_t)(1 << k);
                    outs[i].frame[k] = f;
                    size += 4 + got;
                } else {
                    size += m;
                }
                f++;
            } else {
                size += m;
            }
        }
        size += c->len - m * w;
        PyObject *payload;
        if (c->skip || !(mask | c->packed) || !((double)size <= (double)c->len * (1.0 - min_saving))) {
            payload = Py_None;
            Py_INCREF(payload);
        } else {
            payload = PyBytes_FromStringAndSize(NULL, size);
            if (!payload) goto fail;
            uint8_t *d = (uint8_t *)PyBytes_AS_STRING(payload);
            d[0] = (uint8_t)w;
            d[1] = mask;
            if (head == 3) d[2] = c->packed;
            outs[i].dst = d;
        }
        PyList_SET_ITEM(result, i, payload);
    }
    const uint8_t *base = (const uint8_t *)scratch.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        chunk_plan *c = &plan->c[i];
        uint8_t *d = outs[i].dst;
        if (!d) continue;
        Py_ssize_t m = c->m;
        d += head;
        for (int k = 0; k < w; k++) {
            if (outs[i].frame[k] >= 0) {
                uint32_t len = le32((uint32_t)frames[outs[i].frame[k]].len);
                memcpy(d, &len, 4);
                d += 4;
            }
        }
        for (int k = 0; k < w; k++) {
            if (c->packed >> k & 1) {
                memcpy(d, base + c->packed_off[k], (size_t)packed6_size(m));
                d += packed6_size(m);
            } else if (outs[i].frame[k] >= 0) {
                const Py_buffer *fr = &frames[outs[i].frame[k]];
                memcpy(d, fr->buf, (size_t)fr->len);
                d += fr->len;
            } else {
                memcpy(d, base + c->planes_off + k * m, (size_t)m);
                d += m;
            }
        }
        memcpy(d, (const uint8_t *)bufs[i].buf + m * w, (size_t)(c->len - m * w));
    }
    Py_END_ALLOW_THREADS
    goto done;
fail:
    Py_CLEAR(result);
done:
    if (bufs) release_all(bufs, n);
    if (frames) release_all(frames, nf);
    PyMem_Free(outs);
    Py_XDECREF(fast);
    Py_XDECREF(ffast);
    PyBuffer_Release(&scratch);
    return result;
}

/* ---- the whole batch in one call: split, pack6, zstd and payload layout (issue 12) ----
 *
 * encode_batch(raws, word, rotate, try_mask, pack6_mask, min_words, level, min_saving, out)
 *     -> (table, used)
 *     Each chunk's stored payload, exactly as encode_chunk writes it for the codec,
 *     laid out back to back in the caller's (pooled) buffer `out`, with the GIL
 *     released for the whole batch: no Python object per chunk, no fresh buffer.
 *     word 2 or 4: ByteGroupCodec (planes as split() makes them, pack6 planes, the
 *     planes of try_mask coded with plane_compressor()'s parameters); word 0: plain
 *     zstd at `level` (ZstdCompressor(level=level)). `table` holds two int64 per
 *     chunk, the payload's offset in `out` and its length, or -1 where encode_chunk
 *     stores the chunk raw; `used` is the bytes of `out` written. The frames come
 *     from the vendored zstd (csrc/zstd), which is the zstandard wheel's version:
 *     codecs.py uses this only when zstd_version() equals zstandard.ZSTD_VERSION. */
#include "zstd.h"

typedef struct {
    ZSTD_CCtx *plane, *level;
    int level_set; /* the level `level` was set up for, 0 none */
    uint8_t *scratch;
    size_t cap;
} enc_state;

/* States kept between calls (taken and handed back under the GIL, used without it). */
#define KEPT_STATES 8
static enc_state *kept[KEPT_STATES];
static int n_kept;

static enc_state *state_take(void) {
    if (n_kept) return kept[--n_kept];
    return PyMem_RawCalloc(1, sizeof(enc_state));
}

static void state_free(enc_state *s) {
    ZSTD_freeCCtx(s->plane);
    ZSTD_freeCCtx(s->level);
    PyMem_RawFree(s->scratch);
    PyMem_RawFree(s);
}

static void state_give(enc_state *s) {
    if (n_kept < KEPT_STATES)
        kept[n_kept++] = s;
    else
        state_free(s);
}

#define TRY_Z(expr)                          \
    do {                                     \
        if (ZSTD_isError(expr)) return -1;   \
    } while (0)

/* plane_compressor()'s parameters, set in the order python-zstandard sets them. */
static int setup_plane(ZSTD_CCtx *c) {
    TRY_Z(ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 0));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, 17));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_hashLog, 6));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_chainLog, 6));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_searchLog, 1));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_minMatch, 7));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_targetLength, 0));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_strategy, ZSTD_fast));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_dictIDFlag, 0));
    return 0;
}

/* ZstdCompressor(level=level)'s parameters. */
static int setup_level(ZSTD_CCtx *c, int level) {
    TRY_Z(ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0));
    TRY_Z(ZSTD_CCtx_setParameter(c, ZSTD_c_dictIDFlag, 1));
    return 0;
}

static int state_ready(enc_state *s, int word, int level) {
    if (word) {
        if (!s->plane && !(s->plane = ZSTD_createCCtx())) return -1;
        return setup_plane(s->plane);
    }
    if (!s->level && !(s->level = ZSTD_createCCtx())) return -1;
    if (s->level_set != level) {
        if (setup_level(s->level, level) < 0) return -1;
        s->level_set = level;
    }
    return 0;
}

static int scratch_reserve(enc_state *s, size_t need) {
    if (s->cap >= need) return 0;
    uint8_t *p = PyMem_RawRealloc(s->scratch, need);
    if (!p) return -1;
    s->scratch = p;
    s->cap = need;
    return 0;
}

enum { ENC_OK = 0, ENC_NOMEM = 1, ENC_ZSTD = 2, ENC_ROOM = 3 };

typedef struct {
    int word, rotate, try_mask, pack6_mask, level;
    Py_ssize_t min_words;
    double keep; /* 1 - min_saving */
} enc_args;

/* One chunk coded with plain zstd: its payload at out + *pos, or len -1 (store it raw). */
static int encode_zstd(enc_state *s, const enc_args *a, const uint8_t *src, Py_ssize_t len, uint8_t *out,
                       Py_ssize_t cap, Py_ssize_t *pos, int64_t *row) {
    size_t bound = ZSTD_compressBound((size_t)len);
    int direct = (size_t)(cap - *pos) >= bound; /* straight into out when a whole bound fits */
    if (!direct && scratch_reserve(s, bound) < 0) return ENC_NOMEM;
    uint8_t *dst = direct ? out + *pos : s->scratch;
    size_t got = ZSTD_compress2(s->level, dst, bound, src, (size_t)len);
    if (ZSTD_isError(got)) return ENC_ZSTD;
    row[0] = *pos;
    row[1] = -1;
    if (!((double)got <= (double)len * a->keep)) return ENC_OK;
    if (!direct) {
        if ((Py_ssize_t)got > cap - *pos) return ENC_ROOM;
        memcpy(out + *pos, dst, got);
    }
    row[1] = (int64_t)got;
    *pos += (Py_ssize_t)got;
    return ENC_OK;
}

/* One chunk coded as ByteGroupCodec.encode codes it (then encode_chunk's saving test). */
static int encode_planes(enc_state *s, const enc_args *a, const uint8_t *src, Py_ssize_t len, uint8_t *out,
                         Py_ssize_t cap, Py_ssize_t *pos, int64_t *row) {
    const int w = a->word;
    const Py_ssize_t m = len / w;
    row[0] = *pos;
    row[1] = -1;
    if (m < a->min_words) return ENC_OK;
    const size_t bound = ZSTD_compressBound((size_t)m), p6 = (size_t)packed6_size(m);
    /* scratch: the planes, then per plane room for its pack6 bytes and its frame */
    if (scratch_reserve(s, (size_t)(m * w) + (size_t)w * (p6 + bound)) < 0) return ENC_NOMEM;
    uint8_t *planes = s->scratch, *extra = s->scratch + m * w;
    if (w == 2)
        split2_fast(src, m, a->rotate, planes, planes + m);
    else
        split4_fast(src, m, a->rotate, planes, planes + m, planes + 2 * m, planes + 3 * m);
    const uint8_t *part[4];
    size_t part_len[4];
    uint8_t mask = 0, packed = 0;
    const int head = a->pack6_mask < 0 ? 2 : 3;
    size_t size = (size_t)head + (size_t)(len - m * w);
    for (int k = 0; k < w; k++) {
        const uint8_t *plane = planes + k * m;
        uint8_t *mine = extra + (size_t)k * (p6 + bound);
        part[k] = plane;
        part_len[k] = (size_t)m;
        if (a->pack6_mask >= 0 && (a->pack6_mask >> k & 1) && pack6_applies(plane, m)) {
            pack6_into(plane, m, mine);
            packed |= (uint8_t)(1 << k);
            part[k] = mine;
            part_len[k] = p6;
        } else if (a->try_mask >> k & 1) {
            size_t got = ZSTD_compress2(s->plane, mine + p6, bound, plane, (size_t)m);
            if (ZSTD_isError(got)) return ENC_ZSTD;
            if ((double)got <= (double)m * a->keep) {
                mask |= (uint8_t)(1 << k);
                part[k] = mine + p6;
                part_len[k] = got;
                size += 4;
            }
        }
        size += part_len[k];
    }
    if (!(mask | packed) || !((double)size <= (double)len * a->keep)) return ENC_OK;
    if ((Py_ssize_t)size > cap - *pos) return ENC_ROOM;
    uint8_t *d = out + *pos;
    d[0] = (uint8_t)w;
    d[1] = mask;
    if (head == 3) d[2] = packed;
    d += head;
    for (int k = 0; k < w; k++) {
        if (mask >> k & 1) {
            uint32_t n = le32((uint32_t)part_len[k]);
            memcpy(d, &n, 4);
            d += 4;
        }
    }
    for (int k = 0; k < w; k++) {
        memcpy(d, part[k], part_len[k]);
        d += part_len[k];
    }
    memcpy(d, src + m * w, (size_t)(len - m * w));
    row[1] = (int64_t)size;
    *pos += (Py_ssize_t)size;
    return ENC_OK;
}

static int encode_all(enc_state *s, const enc_args *a, const Py_buffer *bufs, Py_ssize_t n, uint8_t *out,
                      Py_ssize_t cap, Py_ssize_t *pos, int64_t *table) {
    if (state_ready(s, a->word, a->level) < 0) return ENC_ZSTD;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *src = (const uint8_t *)bufs[i].buf;
        int rc = a->word ? encode_planes(s, a, src, bufs[i].len, out, cap, pos, table + 2 * i)
                         : encode_zstd(s, a, src, bufs[i].len, out, cap, pos, table + 2 * i);
        if (rc != ENC_OK) return rc;
    }
    return ENC_OK;
}

static PyObject *planes_encode_batch(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *seq;
    enc_args a;
    double min_saving;
    Py_buffer out;
    if (!PyArg_ParseTuple(args, "Oiiiinidw*", &seq, &a.word, &a.rotate, &a.try_mask, &a.pack6_mask, &a.min_words,
                          &a.level, &min_saving, &out))
        return NULL;
    a.keep = 1.0 - min_saving;
    PyObject *result = NULL, *fast = NULL, *table = NULL;
    Py_buffer *bufs = NULL;
    enc_state *s = NULL;
    Py_ssize_t n = 0, pos = 0;
    if (a.word != 0 && (check_word(a.word, a.rotate) < 0 || check_masks(a.word, a.try_mask, a.pack6_mask) < 0)) goto done;
    bufs = get_raws(seq, &fast, &n);
    if (!bufs) goto done;
    table = PyBytes_FromStringAndSize(NULL, 16 * n);
    s = state_take();
    if (!table || !s) {
        if (!s) PyErr_NoMemory();
        goto done;
    }
    int rc;
    int64_t *rows = (int64_t *)PyBytes_AS_STRING(table);
    Py_BEGIN_ALLOW_THREADS
    rc = encode_all(s, &a, bufs, n, (uint8_t *)out.buf, out.len, &pos, rows);
    Py_END_ALLOW_THREADS
    if (rc == ENC_NOMEM)
        PyErr_NoMemory();
    else if (rc == ENC_ZSTD)
        PyErr_SetString(PyExc_RuntimeError, "zstd refused a batch it should have taken");
    else if (rc == ENC_ROOM)
        PyErr_Format(PyExc_ValueError, "the output buffer of %zd bytes is too small for the batch", out.len);
    else
        result = Py_BuildValue("(On)", table, pos);
done:
    if (s) state_give(s);
    if (bufs) release_all(bufs, n);
    Py_XDECREF(fast);
    Py_XDECREF(table);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *planes_zstd_version(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    unsigned v = ZSTD_versionNumber();
    return Py_BuildValue("(III)", v / 10000, v / 100 % 100, v % 100);
}

/* ---- the vendored zstd's decoder, lent to _native's run decoder (zstd_decoder.h) ---- */
#include "zstd_decoder.h"

static void *zd_create(void) { return ZSTD_createDCtx(); }
static void zd_destroy(void *dctx) { ZSTD_freeDCtx((ZSTD_DCtx *)dctx); }
static int zd_decode_exact(void *dctx, uint8_t *dst, size_t want, const uint8_t *src, size_t n) {
    /* one frame exactly: python-zstandard's decompress ignores bytes after the first
     * frame, so a payload with any is left to the reference rather than judged here */
    size_t frame = ZSTD_findFrameCompressedSize(src, n);
    if (ZSTD_isError(frame) || frame != n) return -1;
    size_t got = ZSTD_decompressDCtx((ZSTD_DCtx *)dctx, dst, want, src, n);
    return ZSTD_isError(got) || got != want ? -1 : 0;
}
static const objstore_zstd_decoder zstd_decoder_api = {zd_create, zd_destroy, zd_decode_exact};

static PyMethodDef methods[] = {
    {"pack6", planes_pack6, METH_VARARGS, "pack6(plane) -> bytes or None: the plane's constant low 2 bits, then its high 6 bits packed"},
    {"unpack6", planes_unpack6, METH_VARARGS, "unpack6(packed, m) -> bytes: the inverse of pack6, strictly checked"},
    {"split", planes_split, METH_VARARGS, "split(raw, word, rotate) -> list of byte planes of the rotated words"},
    {"merge", planes_merge, METH_VARARGS, "merge(planes, word, rotate, tail) -> bytes: the inverse of split, tail appended"},
    {"split_batch", planes_split_batch, METH_VARARGS,
     "split_batch(raws, word, rotate, try_mask, pack6_mask, min_words, scratch) -> (plan, segments)"},
    {"split_batch_scratch", planes_split_batch_scratch, METH_VARARGS,
     "split_batch_scratch(raws, word, pack6_mask) -> the scratch bytes split_batch needs"},
    {"encode_batch", planes_encode_batch, METH_VARARGS,
     "encode_batch(raws, word, rotate, try_mask, pack6_mask, min_words, level, min_saving, out) -> (table, used)"},
    {"zstd_version", planes_zstd_version, METH_NOARGS, "zstd_version() -> the vendored zstd's (major, minor, patch)"},
    {"assemble_batch", planes_assemble_batch, METH_VARARGS,
     "assemble_batch(plan, raws, scratch, frames, min_saving) -> the chunks' payloads (None: store raw)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_planes", "Byte-plane split and merge of rotated words.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__planes(void) {
#ifdef OBJSTORE_X86_DISPATCH
    __builtin_cpu_init();
    /* OBJSTORE_PLANES_PORTABLE=1: the portable loops only (tests compare both) */
    const char *portable = getenv("OBJSTORE_PLANES_PORTABLE");
    int wide = !(portable && portable[0] == '1');
    have_avx2 = wide && __builtin_cpu_supports("avx2");
    have_bmi2 = wide && __builtin_cpu_supports("bmi2");
#endif
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyObject *cap = PyCapsule_New((void *)&zstd_decoder_api, OBJSTORE_ZSTD_DECODER_CAPSULE, NULL);
    if (cap == NULL || PyModule_AddObject(m, "zstd_decoder", cap) < 0) {
        Py_XDECREF(cap);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
