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

#endif
