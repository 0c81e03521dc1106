// test_eval.c — the answer metrics (EM, ROUGE, BLEU), test sets and per-task
// scores. Expected values were worked out by hand from the definitions in
// src/eval/metrics.h (the n-gram counts are written out beside each check).
#include "testing.h"
#include "base/err.h"
#include "eval/evalset.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

TEST(eval_metric_em_normalises) {
    CHECK(rm_metric_em("The Cat!", "cat") == 1); // "the" and "!" dropped
    CHECK(rm_metric_em("  yes \n", "Yes.") == 1);
    CHECK(rm_metric_em("an apple", "apple pie") == 0);
    CHECK(rm_metric_em("A  b\tc", "b c") == 1); // white space collapsed
    CHECK(rm_metric_em("theory", "ory") == 0);  // only whole-word articles go
    CHECK(rm_metric_em("3.5", "35") == 1);      // punctuation dropped everywhere
    CHECK(rm_metric_em("positive", "negative") == 0);
}

TEST(eval_metric_rouge_by_hand) {
    rm_rouge r;
    // the cat sat on the mat / the cat is on the mat: unigrams 5 of 6 both ways,
    // bigrams the-cat on-the the-mat = 3 of 5, LCS "the cat on the mat" = 5
    CHECK_OK(rm_metric_rouge("the cat sat on the mat", "the cat is on the mat", &r));
    CHECK_NEAR(r.r1, 5.0 / 6, 1e-12);
    CHECK_NEAR(r.r2, 0.6, 1e-12);
    CHECK_NEAR(r.rl, 5.0 / 6, 1e-12);
    // a b c d / b x a: unigrams a, b (P 2/4, R 2/3), no bigram, LCS 1 (P 1/4, R 1/3)
    CHECK_OK(rm_metric_rouge("A B C D", "b x a", &r));
    CHECK_NEAR(r.r1, 4.0 / 7, 1e-12);
    CHECK_NEAR(r.r2, 0, 0);
    CHECK_NEAR(r.rl, 2.0 / 7, 1e-12);
    // tokens: lower-cased letter / digit runs, so "It's" is "it s"
    CHECK_OK(rm_metric_rouge("It's 2024!", "it s 2024", &r));
    CHECK_NEAR(r.rl, 1, 1e-12);
    CHECK_OK(rm_metric_rouge("", "something", &r));
    CHECK_NEAR(r.r1 + r.r2 + r.rl, 0, 0);
    CHECK_OK(rm_metric_rouge("Grüße aus Köln", "grüße", &r)); // UTF-8 words stay whole: 1 of 3, 1 of 1
    CHECK_NEAR(r.r1, 0.5, 1e-12);
}

TEST(eval_metric_bleu_corpus_by_hand) {
    rm_bleu b;
    rm_bleu_init(&b);
    // pair 1: matches 5/6, 3/5, 1/4, 0/3 (the 4-grams: none); lengths 6 and 6
    CHECK_OK(rm_bleu_add(&b, "the cat sat on the mat", "the cat is on the mat"));
    CHECK_NEAR(b.match[0], 5, 0);
    CHECK_NEAR(b.total[3], 3, 0);
    // exp(mean(ln 5/6, ln 3/5, ln 1/4, ln 1/(2*3))), no brevity penalty
    CHECK_NEAR(rm_bleu_score(&b), 0.37991784282579627, 1e-12);
    // pair 2: "It costs 3.50 dollars ." (3.50 one token, the final . its own)
    // against "It costs 3.50 dollars today .": matches 5/5, 3/4, 2/3, 1/2
    CHECK_OK(rm_bleu_add(&b, "It costs 3.50 dollars.", "It costs 3.50 dollars today."));
    CHECK_NEAR(b.pred_len, 11, 0);
    CHECK_NEAR(b.ref_len, 12, 0);
    // corpus: 10/11, 6/9, 3/7, 1/5, brevity penalty exp(1 - 12/11)
    CHECK_NEAR(rm_bleu_score(&b), 0.43592422086585847, 1e-12);
    rm_bleu_init(&b);
    CHECK_OK(rm_bleu_add(&b, "Short", "a much longer reference"));
    CHECK_NEAR(rm_bleu_score(&b), 0, 0); // no 2-grams at all
    rm_bleu_init(&b);
    CHECK_NEAR(rm_bleu_score(&b), 0, 0);
    CHECK_OK(rm_bleu_add(&b, "Das ist gut.", "Das ist gut."));
    CHECK_NEAR(rm_bleu_score(&b), 1, 1e-12);
    rm_bleu_init(&b);
    CHECK_OK(rm_bleu_add(&b, "das ist gut.", "Das ist gut.")); // case kept: 3/4, 2/3, 1/2, 0/1
    CHECK_NEAR(rm_bleu_score(&b), exp((log(0.75) + log(2.0 / 3) + log(0.5) + log(0.5)) / 4), 1e-12);
}

static const char *write_file(const char *name, const char *text) {
    static char path[4][512];
    static int k;
    char *p = path[k++ % 4];
    snprintf(p, 512, "%s/%s", rm_test_tmpdir(), name);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return p;
}

TEST(eval_set_load_and_score_by_task) {
    const char *arr = write_file(
        "set.json",
        "[{\"inputs\": \"q1\", \"targets\": \"Yes\", \"task\": \"boolq\", \"metric\": \"em\"},\n"
        " {\"inputs\": \"q2\", \"targets\": \"no\", \"task\": \"boolq\", \"metric\": \"em\"},\n"
        " {\"inputs\": \"q3\", \"targets\": \"the cat is on the mat\", \"task\": \"gen\", \"metric\": \"rouge\"},\n"
        " {\"inputs\": \"q4\", \"targets\": \"the cat is on the mat\", \"task\": \"mt\", \"metric\": \"bleu\"}]");
    rm_evalset s;
    CHECK_OK(rm_evalset_load(arr, RM_METRIC_EM, &s));
    REQUIRE(s.n == 4);
    CHECK(!strcmp(s.r[2].task, "gen") && s.r[2].metric == RM_METRIC_ROUGE && !strcmp(s.r[3].inputs, "q4"));
    rm_scoreboard b = {0};
    double sc;
    CHECK_OK(rm_scoreboard_add(&b, &s.r[0], "yes.", &sc));
    CHECK_NEAR(sc, 1, 0);
    CHECK_OK(rm_scoreboard_add(&b, &s.r[1], "yes", &sc));
    CHECK_NEAR(sc, 0, 0);
    CHECK_OK(rm_scoreboard_add(&b, &s.r[2], "the cat sat on the mat", &sc));
    CHECK_NEAR(sc, 5.0 / 6, 1e-12);
    CHECK_OK(rm_scoreboard_add(&b, &s.r[3], "the cat sat on the mat", &sc));
    CHECK_NEAR(sc, 0.37991784282579627, 1e-12);
    REQUIRE(b.n == 3);
    CHECK(b.t[0].n == 2 && !strcmp(b.t[0].task, "boolq"));
    CHECK_NEAR(rm_task_score_value(&b.t[0]), 0.5, 0);
    int nt;
    CHECK_NEAR(rm_scoreboard_mean(&b, RM_METRIC_EM, &nt), 0.5, 0);
    CHECK(nt == 1);
    CHECK_NEAR(rm_scoreboard_mean(&b, -1, &nt), (0.5 + 5.0 / 6 + 0.37991784282579627) / 3, 1e-12);
    CHECK(nt == 3);
    CHECK(isnan(rm_scoreboard_mean(&b, 99, &nt)) && nt == 0);
    // one task, two metrics: refused, named
    rm_eval_req odd = {"q", "t", "boolq", RM_METRIC_ROUGE};
    CHECK(rm_scoreboard_add(&b, &odd, "t", NULL) != 0);
    CHECK(strstr(rm_last_error(), "boolq") && strstr(rm_last_error(), "rouge"));
    rm_scoreboard_free(&b);
    rm_evalset_free(&s);

    // JSON lines, defaults: task "all", the given metric
    const char *jl =
        write_file("set.jsonl", "{\"inputs\": \"a\", \"targets\": \"b\"}\n\n{\"inputs\": \"c\", \"targets\": \"d\"}\n");
    CHECK_OK(rm_evalset_load(jl, RM_METRIC_ROUGE, &s));
    CHECK(s.n == 2 && !strcmp(s.r[1].task, "all") && s.r[1].metric == RM_METRIC_ROUGE);
    rm_evalset_free(&s);

    // bad input names the file and the request
    const char *bad = write_file("bad.jsonl", "{\"inputs\": \"a\", \"targets\": \"b\"}\n{\"inputs\": \"c\"}\n");
    CHECK(rm_evalset_load(bad, RM_METRIC_EM, &s) != 0);
    CHECK(strstr(rm_last_error(), "bad.jsonl") && strstr(rm_last_error(), "request 2"));
    CHECK(s.n == 0 && s.r == NULL);
    const char *badm = write_file("badm.json", "[{\"inputs\": \"a\", \"targets\": \"b\", \"metric\": \"f1\"}]");
    CHECK(rm_evalset_load(badm, RM_METRIC_EM, &s) != 0);
    CHECK(strstr(rm_last_error(), "f1"));
    const char *broken = write_file("broken.jsonl", "{\"inputs\": \"a\", \"targets\": \"b\"}\n{\"inputs\": \n");
    CHECK(rm_evalset_load(broken, RM_METRIC_EM, &s) != 0);
    CHECK(strstr(rm_last_error(), "broken.jsonl:2"));
    CHECK(rm_evalset_load(write_file("empty.json", "[]"), RM_METRIC_EM, &s) != 0);
    CHECK(strstr(rm_last_error(), "no requests"));
}
