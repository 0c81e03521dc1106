// embed_shape.c — a small dense embedder of a text's surface shape: length,
// line count and the shares of capitals, digits, non-ASCII bytes and
// punctuation, each as a soft one-hot block, and its letter profile. Alone it retrieves little; in a
// hybrid it separates tasks whose instructions read alike but whose inputs
// differ in form (long movie reviews vs short phrases, lowercased search
// queries vs trivia questions, non-Latin scripts). The instruction prefix is
// skipped. No state, no payload.
#include "retrieve/embed_impl.h"
#include "base/err.h"

#include <math.h>
#include <string.h>

enum { LEN_B = 32, LINE_B = 16, RATIO_B = 10, N_RATIOS = 4, LETTER_B = 32 };
#define SHAPE_DIM (LEN_B + LINE_B + N_RATIOS * RATIO_B + LETTER_B)

// Adds 1 at bucket b of a block of n, 0.5 at its neighbours.
static void soft_onehot(float *block, int n, int b) {
    if (b < 0) b = 0;
    if (b >= n) b = n - 1;
    block[b] += 1.0f;
    if (b > 0) block[b - 1] += 0.5f;
    if (b + 1 < n) block[b + 1] += 0.5f;
}

static int shape_embed(const rm_embedder *e, const char *text, size_t len, float *out) {
    size_t pl = strlen(e->prefix);
    if (len >= pl && !memcmp(text, e->prefix, pl)) {
        text += pl;
        len -= pl;
    }
    size_t letters = 0, upper = 0, digits = 0, nonascii = 0, punct = 0, visible = 0, lines = 1;
    double freq[LETTER_B] = {0}; // a-z folded, then UTF-8 lead bytes in 6 bins
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\n') lines++;
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') freq[(c | 0x20) - 'a'] += 1;
        else if (c >= 0xc0) freq[26 + c % 6] += 1;
        if (c <= ' ') continue;
        visible++;
        if (c >= 0x80) nonascii++;
        else if (c >= 'A' && c <= 'Z') {
            upper++;
            letters++;
        } else if (c >= 'a' && c <= 'z') letters++;
        else if (c >= '0' && c <= '9') digits++;
        else punct++;
    }
    memset(out, 0, (size_t)e->dim * sizeof *out);
    float *o = out;
    soft_onehot(o, LEN_B, (int)(2.0 * log2((double)len + 1.0)));
    o += LEN_B;
    soft_onehot(o, LINE_B, (int)(lines - 1));
    o += LINE_B;
    double ratios[N_RATIOS] = {letters ? (double)upper / letters : 0, visible ? (double)digits / visible : 0,
                               visible ? (double)nonascii / visible : 0, visible ? (double)punct / visible : 0};
    for (int r = 0; r < N_RATIOS; r++, o += RATIO_B) soft_onehot(o, RATIO_B, (int)(sqrt(ratios[r]) * RATIO_B));
    // the letter profile (a language's fingerprint) as sqrt frequencies: unit length
    double total = 0;
    for (int b = 0; b < LETTER_B; b++) total += freq[b];
    for (int b = 0; b < LETTER_B && total > 0; b++) o[b] = (float)sqrt(freq[b] / total);
    return RM_OK;
}

static int shape_save(const rm_embedder *e, rm_bytes *b) { return RM_OK; }
static int shape_load(rm_embedder *e, rm_reader *r) {
    return e->dim == SHAPE_DIM ? RM_OK : rm_errorf(RM_EFORMAT, "%s: shape embedder of dim %d", r->what, e->dim);
}
static void shape_free(rm_embedder *e) {}

const rm_embedder_ops rm_shape_ops = {"shape", shape_embed, shape_save, shape_load, shape_free};

int rm_shape_create(const char *prefix, rm_embedder **out) {
    return embed_alloc(&rm_shape_ops, "shape", SHAPE_DIM, prefix, out);
}
