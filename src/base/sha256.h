// sha256.h — SHA-256 (FIPS 180-4), for naming stored content by its hash
// (adapters uploaded to a server are kept under the hash of their files).
#ifndef RM_BASE_SHA256_H
#define RM_BASE_SHA256_H
#include <stddef.h>
#include <stdint.h>

typedef struct rm_sha256 {
    uint32_t h[8];
    uint64_t len; // bytes hashed so far
    uint8_t buf[64];
    size_t n; // bytes waiting in buf
} rm_sha256;

void rm_sha256_init(rm_sha256 *s);
void rm_sha256_update(rm_sha256 *s, const void *data, size_t len);
void rm_sha256_final(rm_sha256 *s, uint8_t out[32]);
// The digest as 64 lower-case hex digits and a NUL.
void rm_sha256_hex(const uint8_t digest[32], char out[65]);
#endif
