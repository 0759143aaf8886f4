/* Hashed syscall n-grams: the kernel side of docs/ngram-spec.md v2 (Python side: models/ngrams.py).
 *
 * gram_hash(ids) = fmix32(FNV-1a over 32-bit words, offset basis xor n), all arithmetic mod 2^32.
 * Orders 2, 3, 4: bucket (n - 2) * NGRAM_BUCKETS + (hash & (NGRAM_BUCKETS - 1)), in [0, 12288).
 * Order 6: bucket NGRAM_LONG_OFFSET + (hash & (NGRAM_LONG_BUCKETS - 1)), in [12288, 77824).
 */
#ifndef BASELINER_NGRAMS_H
#define BASELINER_NGRAMS_H

#define NGRAM_SPEC_VERSION 2
#define NGRAM_BUCKETS 4096u                       /* per short order (2, 3, 4) */
#define NGRAM_LONG_ORDER 6
#define NGRAM_LONG_BUCKETS 65536u                 /* order 6 */
#define NGRAM_LONG_OFFSET (3u * NGRAM_BUCKETS)    /* 12288 */
#define NGRAM_MAX_ORDER 6
#define NGRAM_NR_LIMIT 512 /* size of the nr -> canonical id table */

#define FNV_OFFSET 0x811C9DC5u
#define FNV_PRIME 0x01000193u

static __always_inline u32 fmix32(u32 h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

static __always_inline u32 fnv_word(u32 h, u32 w) { return (h ^ w) * FNV_PRIME; }

/* Oldest id first, as in the spec. */
static __always_inline u32 gram2(u32 a, u32 b)
{
    u32 h = (FNV_OFFSET ^ 2u) * FNV_PRIME;
    return fmix32(fnv_word(fnv_word(h, a), b));
}

static __always_inline u32 gram3(u32 a, u32 b, u32 c)
{
    u32 h = (FNV_OFFSET ^ 3u) * FNV_PRIME;
    return fmix32(fnv_word(fnv_word(fnv_word(h, a), b), c));
}

static __always_inline u32 gram4(u32 a, u32 b, u32 c, u32 d)
{
    u32 h = (FNV_OFFSET ^ 4u) * FNV_PRIME;
    return fmix32(fnv_word(fnv_word(fnv_word(fnv_word(h, a), b), c), d));
}

static __always_inline u32 gram6(u32 a, u32 b, u32 c, u32 d, u32 e, u32 f)
{
    u32 h = (FNV_OFFSET ^ 6u) * FNV_PRIME;
    h = fnv_word(fnv_word(fnv_word(h, a), b), c);
    return fmix32(fnv_word(fnv_word(fnv_word(h, d), e), f));
}

/* Per-thread history: the last five (NGRAM_MAX_ORDER - 1) canonical ids, most recent first (p1), and
 * how many are valid. */
struct thread_hist {
    u32 p1;
    u32 p2;
    u32 p3;
    u32 p4;
    u32 p5;
    u32 n;
};

#endif
