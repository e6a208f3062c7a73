/* The vendored zstd's decoder, lent by objstore.storage._planes (which compiles
 * csrc/zstd) to objstore.storage._native's run decoder through a capsule, so zstd
 * is compiled once and decoding needs neither the GIL nor python-zstandard.
 *
 * decode_exact(dctx, dst, want, src, n) is 0 iff src[0:n] is exactly one zstd frame
 * (no trailing bytes) that decodes, checksum included if it has one, to exactly
 * `want` bytes into dst; anything else is -1 and the caller leaves the chunk to the
 * reference decoder, which decides. Each dctx is used by one thread at a time. */
#ifndef OBJSTORE_ZSTD_DECODER_H
#define OBJSTORE_ZSTD_DECODER_H

#include <stddef.h>
#include <stdint.h>

#define OBJSTORE_ZSTD_DECODER_CAPSULE "objstore.storage._planes.zstd_decoder"

typedef struct {
    void *(*create)(void);
    void (*destroy)(void *dctx);
    int (*decode_exact)(void *dctx, uint8_t *dst, size_t want, const uint8_t *src, size_t n);
} objstore_zstd_decoder;

#endif
