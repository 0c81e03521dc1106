// tokenizer_impl.h — internals shared by the tokenizer files (not public).
//
//   tokenizer.c       vocabulary, GGUF loading, special-token splitting,
//                     rm_tokenize dispatch, decoding, streaming detokenizer
//   tokenizer_spm.c   SentencePiece BPE (score-driven merges, byte fallback)
//   tokenizer_bpe.c   byte-level BPE (rank-ordered merges) + regex pre-tokenizers
//   tokenizer_wpm.c   WordPiece (BERT basic tokenization + greedy longest match)
//   tokenizer_hf.c    Hugging Face tokenizer.json
//   tokenizer_chat.c  chat templates
#ifndef RM_MODEL_TOKENIZER_IMPL_H
#define RM_MODEL_TOKENIZER_IMPL_H
#include <stddef.h>
#include <stdint.h>

#include <pthread.h>

#include "model/tokenizer.h"

// GGUF tokenizer.ggml.token_type values.
enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER = 4, TOK_UNUSED = 5, TOK_BYTE = 6 };
enum { TOK_KIND_SPM, TOK_KIND_BPE, TOK_KIND_WPM };

// ---- string -> int map (open addressing; keys are not owned) ----
// Values are small non-negative ints (token ids, symbol ids). A slot is
// hash << 32 | (val + 1), 0 when empty: 8 bytes, so that the probes of
// absent keys (most SPM pair lookups) stay within a cache-friendly table.
// The key of a value is kept in keyp/keyr, indexed by the value; keyr holds
// the length and first 12 bytes, so that short keys compare in one record.
typedef struct tok_keyrec {
    uint64_t lo;
    uint32_t hi, len;
} tok_keyrec;
typedef struct tok_map {
    uint64_t *slots;
    uint32_t mask, n;
    const char **keyp;
    tok_keyrec *keyr;
    size_t cap_keys;
} tok_map;
uint32_t tok_hash(const char *s, size_t n);
int tok_map_init(tok_map *m, size_t expected);
void tok_map_free(tok_map *m);
// Inserts or replaces. Returns 0 or RM_ENOMEM.
int tok_map_put(tok_map *m, const char *key, size_t len, int32_t val);
// Value for key, or -1.
int32_t tok_map_get(const tok_map *m, const char *key, size_t len);

// Grows the array *v (elements of `elem` bytes, capacity *cap) to hold at
// least `need` elements, doubling from 64. Returns 0, or -1 when out of memory.
int tok_reserve(void **v, size_t *cap, size_t need, size_t elem);

// ---- growable id buffer used while encoding ----
// unspellable: 1 + the first byte that neither a token nor the unknown token
// could stand for (0: none); rm_tokenize then fails instead of dropping it.
typedef struct tok_ids {
    int32_t *v;
    int n;
    size_t cap;
    int oom, unspellable;
} tok_ids;
void tok_ids_push(tok_ids *o, int32_t id);
// Records that byte c could not be spelled (the first such byte is kept).
void tok_ids_unspellable(tok_ids *o, uint8_t c);

// ---- word -> ids cache (tokenizer_cache.c); NULL-safe ----
#define TOK_CACHE_MAX_WORD 64
typedef struct tok_cache tok_cache;
tok_cache *tok_cache_new(void);
void tok_cache_free(tok_cache *c);
// Appends the cached ids of word w to out and returns 1, or returns 0.
int tok_cache_get(const tok_cache *c, const char *w, size_t n, tok_ids *out);
// Caches word w as the ids out holds from index `from` on; nothing when out
// ran out of memory or met an unspellable byte.
void tok_cache_put(tok_cache *c, const char *w, size_t n, const tok_ids *out, int from);

// Words/segments of at most this many symbols (and at most TOK_SHORT_MAX)
// are merged by scanning, longer ones through the heap. Both give the same
// tokens; tests lower it to 0 to run the heap path everywhere.
#define TOK_SHORT_MAX 24
extern int tok_short_words;

// ---- merge candidates: a binary min-heap on (key, left) ----
// SPM pushes key = -score, BPE key = merge rank; ties go to the leftmost pair.
typedef struct tok_cand {
    double key;
    int32_t left, right, a, b, c;
} tok_cand;
typedef struct tok_heap {
    tok_cand *v;
    size_t n, cap;
    int oom;
} tok_heap;
void tok_heap_push(tok_heap *h, tok_cand c);
tok_cand tok_heap_pop(tok_heap *h); // h->n > 0

// ---- byte-level BPE state (tokenizer_bpe.c) ----
typedef struct tok_bpe tok_bpe;
// ---- WordPiece state (tokenizer_wpm.c) ----

struct rm_tokenizer {
    int kind; // TOK_KIND_*
    int n_vocab;
    char **text; // token strings (NUL-terminated copies)
    uint32_t *len;
    float *score;
    uint8_t *type; // TOK_*
    tok_map vocab; // text -> id (last id wins on duplicates)
    char **piece;  // decoded bytes of each token (render_special form)
    uint32_t *piece_len;
    int max_token_len;

    int32_t bos, eos, unk, sep, pad, cls, eot, eom;
    int add_bos, add_eos, add_space_prefix, ignore_merges;
    int prefix_first_only; // the space prefix only at the start of the text, not after specials
    uint8_t *eog;          // n_vocab flags

    // Strings split out of the text before the model runs: control, user
    // defined and unknown tokens, longest first.
    int32_t *special;
    int n_special;
    // Positions in `special` grouped by first byte: [0] all, [1] user-defined only.
    int32_t *spec_pos[2];
    uint32_t spec_start[2][257];

    int32_t byte_tok[256]; // SPM <0xNN> tokens (-1 when absent)
    tok_bpe *bpe;          // byte-level BPE, NULL otherwise
    int bpe_byte_level;    // 1: gpt2-style byte mapping (0: HF BPE with byte fallback)
    int spm_split;         // SPM: no token has a space marker after another char
    int wpm_lowercase, wpm_strip_accents, wpm_max_chars;
    tok_cache *cache; // guarded by cache_mu (try-lock; busy -> no cache)
    pthread_mutex_t cache_mu;
    char pre_name[64];
    char *chat_template; // tokenizer.chat_template or NULL
};

// Creates the core tokenizer with n tokens (arrays zeroed). texts copied by tok_set_token.
int tok_alloc(rm_tokenizer **out, int kind, int n);
int tok_set_token(rm_tokenizer *t, int id, const char *s, size_t len, float score, int type);
// After all tokens are set: builds the vocab map, specials, byte tokens, pieces, EOG set.
int tok_finish(rm_tokenizer *t);

// Encoders of one raw-text fragment (no specials inside). Append to out.
// SPM and plain (non-byte-level) BPE get text whose spaces are already
// U+2581 (see encode_escaped in tokenizer.c).
int tok_spm_encode(const rm_tokenizer *t, const char *s, size_t n, tok_ids *out);
int tok_bpe_encode_plain(const rm_tokenizer *t, const char *s, size_t n, tok_ids *out);
int tok_bpe_encode(const rm_tokenizer *t, const char *s, size_t n, tok_cache *cache, tok_ids *out);
int tok_wpm_encode(const rm_tokenizer *t, const char *s, size_t n, tok_cache *cache, tok_ids *out);
const char *tok_bpe_gpt2_regex(void);
// The pre-tokenizer pieces of s[0..n): writes up to cap piece end offsets and
// returns the piece count (tests look at the splitting with it).
int tok_bpe_split(const rm_tokenizer *t, const char *s, size_t n, size_t *ends, int cap);

// Byte-level BPE setup. merges[i] = "left right"; pre = tokenizer.ggml.pre
// name (NULL/"" = default). Unknown pre names fail with RM_EUNSUPPORTED.
int tok_bpe_init(rm_tokenizer *t, const char *const *merges, const size_t *merge_lens, size_t n_merges,
                 const char *pre);
// Pre-tokenizer from explicit regexes (tokenizer.json); n_regex may be 0 (no split).
int tok_bpe_init_regex(rm_tokenizer *t, const char *const *merges, const size_t *merge_lens, size_t n_merges,
                       const char *const *regex, int n_regex);
void tok_bpe_free(tok_bpe *b);
// The pre-tokenizer regexes (patterns as given to tok_bpe_init*); returns the count.
int tok_bpe_regexes(const rm_tokenizer *t, const char *const **rx);
// 1 and the tokenizer.ggml.pre name (llama.cpp's) when the regexes are
// exactly those of a known pre-tokenizer, else 0.
int tok_bpe_known_pre(const rm_tokenizer *t, char *name, size_t cap);
// The merges in rank order as "left right" strings (malloc'd, as the array).
int tok_bpe_merges(const rm_tokenizer *t, char ***out, size_t *n);

// ---- ramole's own GGUF keys (tokenizer_gguf.c) ----
// What tokenizer.ggml.* cannot say about a tokenizer.json tokenizer:
//   ramole.tokenizer.spm_merges     bool  a "llama" vocabulary that is BPE with ranked
//                                         tokenizer.ggml.merges over "▁"-escaped text
//   ramole.tokenizer.pre_regex      str[] pre-tokenizer regexes (over tokenizer.ggml.pre)
//   ramole.tokenizer.ignore_merges  bool
//   ramole.tokenizer.prefix_first_only bool
//   ramole.tokenizer.wpm_lowercase / wpm_strip_accents bool, wpm_max_chars u32
// Reads the options above that apply after construction.
void tok_gguf_read_options(rm_tokenizer *t, const gguf_file *g);
// tok_bpe_init_regex with the regexes of ramole.tokenizer.pre_regex (none if absent).
int tok_gguf_bpe_init(rm_tokenizer *t, const gguf_file *g, const char *const *merges, const size_t *merge_lens,
                      size_t n_merges);
// Byte-level decoding of a token string (GPT-2 byte<->unicode mapping);
// characters outside the mapping are copied as they are. Returns length.
size_t tok_bpe_decode_text(const char *s, size_t n, char *out);
// The GPT-2 byte-to-unicode mapping: UTF-8 of the char standing for byte b.
int tok_byte_to_unicode(int b, char out[4]);

// UTF-8 helpers.
int tok_utf8_len(unsigned char c); // sequence length from the lead byte (1 for invalid)
// Decodes one code point at s[0..n); sets *adv (>= 1). Invalid -> 0xFFFD.
uint32_t tok_utf8_decode(const char *s, size_t n, int *adv);
int tok_utf8_encode(uint32_t cp, char *out); // returns 1..4
#endif
