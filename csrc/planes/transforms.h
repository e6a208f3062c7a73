/* The byte-plane transforms of the bytegroup codecs, shared by _planes (one call per
 * plane set) and _native (a whole run of chunks per call). Pure C on
 * Py_ssize_t lengths: include after Python.h.
 *
 * The decode side (merge2, unpack6_into) has AVX2 kernels for the bulk of a plane,
 * chosen at run time (the CPU, and the OS saving its registers, must support AVX2;
 * OBJSTORE_SIMD=0 in the environment forces the scalar code), so a build runs on any
 * x86-64 and never executes an instruction the CPU lacks. The kernels do the
 * whole vectors and the scalar loops the rest: both give the same bytes. */
#ifndef OBJSTORE_PLANES_TRANSFORMS_H
#define OBJSTORE_PLANES_TRANSFORMS_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t le32(uint32_t x) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap32(x);
#else
    return x;
#endif
}

static inline uint64_t le64(uint64_t x) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap64(x);
#else
    return x;
#endif
}

static inline uint16_t rotl16(uint16_t x, int r) { return r ? (uint16_t)((x << r) | (x >> (16 - r))) : x; }
static inline uint16_t rotr16(uint16_t x, int r) { return r ? (uint16_t)((x >> r) | (x << (16 - r))) : x; }
static inline uint32_t rotl32(uint32_t x, int r) { return r ? (x << r) | (x >> (32 - r)) : x; }
static inline uint32_t rotr32(uint32_t x, int r) { return r ? (x >> r) | (x << (32 - r)) : x; }

/* -- run-time SIMD dispatch (decode side) ------------------------------------------- */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define OBJSTORE_PLANES_AVX2 1
#include <immintrin.h>
#include <stdlib.h>

/* 1 if the AVX2 kernels may run: the CPU and OS support them and OBJSTORE_SIMD is not
 * "0". Decided once per module (the check is idempotent, so racing threads agree). */
static inline int planes_avx2(void) {
    static int state = -1;
    int s = __atomic_load_n(&state, __ATOMIC_RELAXED);
    if (s < 0) {
        const char *env = getenv("OBJSTORE_SIMD");
        __builtin_cpu_init();
        s = (env != NULL && env[0] == '0' && env[1] == 0) ? 0 : __builtin_cpu_supports("avx2") ? 1 : 0;
        __atomic_store_n(&state, s, __ATOMIC_RELAXED);
    }
    return s;
}

/* merge2 for the first m - m % 32 words; returns how many it did */
__attribute__((target("avx2"))) static Py_ssize_t merge2_avx2(uint8_t *dst, Py_ssize_t m, int r, const uint8_t *p0,
                                                                const uint8_t *p1) {
    const __m128i right = _mm_cvtsi32_si128(r), left = _mm_cvtsi32_si128(16 - r);  /* a shift by 16 gives 0 */
    Py_ssize_t i = 0;
    for (; i + 32 <= m; i += 32) {
        /* qwords 0,2,1,3: the in-lane unpacks then give words 0-15 and 16-31 in order */
        __m256i a = _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)(p0 + i)), 0xD8);
        __m256i b = _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)(p1 + i)), 0xD8);
        __m256i lo = _mm256_unpacklo_epi8(a, b), hi = _mm256_unpackhi_epi8(a, b);
        lo = _mm256_or_si256(_mm256_srl_epi16(lo, right), _mm256_sll_epi16(lo, left));
        hi = _mm256_or_si256(_mm256_srl_epi16(hi, right), _mm256_sll_epi16(hi, left));
        _mm256_storeu_si256((__m256i *)(dst + 2 * i), lo);
        _mm256_storeu_si256((__m256i *)(dst + 2 * i + 32), hi);
    }
    return i;
}

/* 6-bit groups 0.. of s into d, 8 groups (24 bytes in, 32 out) a step while 28 bytes
 * can be loaded; returns the groups done (a multiple of 8, at most full) */
__attribute__((target("avx2"))) static Py_ssize_t unpack6_avx2(const uint8_t *s, Py_ssize_t packed_len, uint8_t low,
                                                                 Py_ssize_t full, uint8_t *d) {
    const __m256i spread = _mm256_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1,
                                            0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1);
    const __m256i lows = _mm256_set1_epi8((char)low);
    const __m256i m0 = _mm256_set1_epi32(0xFC), m1 = _mm256_set1_epi32(0xFC00), m2 = _mm256_set1_epi32(0xFC0000),
                  m3 = _mm256_set1_epi32((int)0xFC000000u);
    Py_ssize_t g = 0;
    for (; g + 8 <= full && 3 * g + 28 <= packed_len; g += 8) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + 3 * g)), b = _mm_loadu_si128((const __m128i *)(s + 3 * g + 12));
        /* each 32-bit lane holds one group's 24 bits x: value j goes to byte j as (x >> 6j & 63) << 2 */
        __m256i x = _mm256_shuffle_epi8(_mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1), spread);
        __m256i q = _mm256_or_si256(
            _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(x, 2), m0), _mm256_and_si256(_mm256_slli_epi32(x, 4), m1)),
            _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(x, 6), m2), _mm256_and_si256(_mm256_slli_epi32(x, 8), m3)));
        _mm256_storeu_si256((__m256i *)(d + 4 * g), _mm256_or_si256(q, lows));
    }
    return g;
}
#endif

static inline void split2(const uint8_t *src, Py_ssize_t m, int r, uint8_t *p0, uint8_t *p1) {
    for (Py_ssize_t i = 0; i < m; i++) {
        uint16_t w = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
        w = rotl16(w, r);
        p0[i] = (uint8_t)w;
        p1[i] = (uint8_t)(w >> 8);
    }
}

static inline void split4(const uint8_t *src, Py_ssize_t m, int r, uint8_t *p0, uint8_t *p1, uint8_t *p2, uint8_t *p3) {
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

static inline void merge2(uint8_t *dst, Py_ssize_t m, int r, const uint8_t *p0, const uint8_t *p1) {
    Py_ssize_t i = 0;
#ifdef OBJSTORE_PLANES_AVX2
    if (planes_avx2()) i = merge2_avx2(dst, m, r, p0, p1);
#endif
    for (; i < m; i++) {
        uint16_t w = rotr16((uint16_t)(p0[i] | (p1[i] << 8)), r);
        dst[2 * i] = (uint8_t)w;
        dst[2 * i + 1] = (uint8_t)(w >> 8);
    }
}

static inline void merge4(uint8_t *dst, Py_ssize_t m, int r, const uint8_t *p0, const uint8_t *p1, const uint8_t *p2,
                   const uint8_t *p3) {
    for (Py_ssize_t i = 0; i < m; i++) {
        uint32_t w = rotr32((uint32_t)p0[i] | ((uint32_t)p1[i] << 8) | ((uint32_t)p2[i] << 16) | ((uint32_t)p3[i] << 24), r);
        dst[4 * i] = (uint8_t)w;
        dst[4 * i + 1] = (uint8_t)(w >> 8);
        dst[4 * i + 2] = (uint8_t)(w >> 16);
        dst[4 * i + 3] = (uint8_t)(w >> 24);
    }
}

/* The m plane bytes of a 6-bit packed plane: s holds the packed_len bytes after the
 * low-bits byte (the caller checked packed_len and low < 4); 0 if the padding is not zero. */
static inline int unpack6_into(const uint8_t *s, Py_ssize_t packed_len, uint8_t low, Py_ssize_t m, uint8_t *d) {
    int pad_ok = 1;
    Py_ssize_t full = m / 4;
    uint32_t lows = 0x01010101u * low;
    uint64_t lows64 = 0x0101010101010101ull * low;
    Py_ssize_t g = 0;
#ifdef OBJSTORE_PLANES_AVX2
    if (planes_avx2()) g = unpack6_avx2(s, packed_len, low, full, d);
#endif
    /* two groups (6 packed bytes) at a time, loaded with an 8-byte read while it stays inside */
    for (; g + 2 <= full && 3 * g + 8 <= packed_len; g += 2) {
        uint64_t t;
        memcpy(&t, s + 3 * g, 8);
        t = le64(t) & 0xFFFFFFFFFFFFull;
        t = (t & 0xFFFFFFull) | ((t & 0xFFFFFF000000ull) << 8);
        t = (t & 0x00000FFF00000FFFull) | ((t & 0x00FFF00000FFF000ull) << 4);
        t = (t & 0x003F003F003F003Full) | ((t & 0x0FC00FC00FC00FC0ull) << 2);
        uint64_t q = le64((t << 2) | lows64);
        memcpy(d + 4 * g, &q, 8);
    }
    for (; g < full; g++) {
        uint32_t x = (uint32_t)s[3 * g] | ((uint32_t)s[3 * g + 1] << 8) | ((uint32_t)s[3 * g + 2] << 16);
        uint32_t q = ((x & 0x3F) << 2) | ((x & 0xFC0) << 4) | ((x & 0x3F000) << 6) | ((x & 0xFC0000) << 8) | lows;
        q = le32(q);
        memcpy(d + 4 * g, &q, 4);
    }
    Py_ssize_t rest = m - 4 * full;
    if (rest) {
        uint32_t x = (uint32_t)s[3 * full] | ((uint32_t)s[3 * full + 1] << 8) | ((uint32_t)s[3 * full + 2] << 16);
        for (Py_ssize_t j = 0; j < rest; j++) d[4 * full + j] = (uint8_t)((((x >> (6 * j)) & 63) << 2) | low);
        pad_ok = (x >> (6 * rest)) == 0;
    }
    return pad_ok;
}

#endif
