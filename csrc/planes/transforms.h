/* The byte-plane transforms of the bytegroup codecs, shared by _planes (one call per
 * plane set) and _native (a whole run of chunks per call). Pure C on
 * Py_ssize_t lengths: include after Python.h. */
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
    for (Py_ssize_t i = 0; i < m; i++) {
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
