// metrics.h — how a generated answer is scored against its target: the three
// metrics of the paper's mixed-task test set (each request names one of
// them in its "metric" field).
//
//   em     exact match after normalisation: lower case, punctuation dropped,
//          the articles a / an / the dropped, white space collapsed (the
//          SQuAD convention); 1 or 0 per request, averaged.
//   rouge  ROUGE-L F1 per request, averaged (ROUGE-1 and ROUGE-2 F1 are
//          computed alongside). Tokens: lower-cased runs of letters and
//          digits (bytes >= 0x80 count as letters, so UTF-8 words stay whole);
//          everything else separates tokens. No stemming.
//   bleu   corpus BLEU over a task's requests: clipped n-gram matches and
//          n-gram counts summed over the corpus for n = 1..4, geometric mean
//          of the four precisions, brevity penalty exp(1 - r/c) when the
//          predictions' total length c is below the targets' r. An order
//          with no match gets the precision 1 / (2^k x its count) for its
//          k-th such order ("exp" smoothing); an order with no n-grams at all
//          (every prediction shorter than n) gives BLEU 0. Tokens: white
//          space splits, and each ASCII punctuation character is a token of
//          its own except . and , between two digits; case is kept.
// Scores are in [0, 1]; tools print them x 100.
#ifndef RM_EVAL_METRICS_H
#define RM_EVAL_METRICS_H
#include <stddef.h>

typedef enum { RM_METRIC_EM, RM_METRIC_ROUGE, RM_METRIC_BLEU, RM_METRIC_COUNT } rm_metric;
// "em" | "rouge" | "bleu" (also "exact_match", "rougeL", "rouge-l"); -1 when unknown.
int rm_metric_parse(const char *s, rm_metric *out);
const char *rm_metric_name(rm_metric m);

// 1 when pred and target are equal after the normalisation above.
int rm_metric_em(const char *pred, const char *target);

typedef struct rm_rouge {
    double r1, r2, rl;
} rm_rouge; // F1 scores
// ROUGE-1 / -2 / -L F1 of pred against target (0 when either has no tokens;
// the LCS of texts over 4096 tokens is taken on their first 4096).
int rm_metric_rouge(const char *pred, const char *target, rm_rouge *out);

// Corpus BLEU: add each (prediction, target) pair, then read the score.
typedef struct rm_bleu {
    double match[4], total[4]; // clipped matches and n-gram counts, n = 1..4
    double pred_len, ref_len;
} rm_bleu;
void rm_bleu_init(rm_bleu *b);
int rm_bleu_add(rm_bleu *b, const char *pred, const char *target);
double rm_bleu_score(const rm_bleu *b);
#endif
