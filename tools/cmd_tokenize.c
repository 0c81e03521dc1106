// cmd_tokenize.c — `ramole tokenize`: text to token ids with a model's tokenizer.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "cli.h"
#include "format/gguf.h"
#include "model/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: ramole tokenize -m MODEL (-p TEXT | -f FILE | --vocab-test FILE.inp) [options]\n"
               "  -m, --model PATH     GGUF file, tokenizer.json, or a Hugging Face model directory\n"
               "  -p, --prompt TEXT    text to tokenize\n"
               "  -f, --file PATH      read the text from a file\n"
               "  --ids                print only the ids, space separated, on one line\n"
               "  --bos                add the BOS token (WordPiece: [CLS] ... [SEP])\n"
               "  --special            parse special-token text (e.g. <|im_start|>) as single tokens\n"
               "  --vocab-test PATH    test file: strings separated by lines __ggml_vocab_test__;\n"
               "                       prints one line per string: a space before each id\n");
}

// Loads a tokenizer from a GGUF file, a tokenizer.json or a directory holding one.
static int load_tokenizer(const char *path, rm_tokenizer **tok) {
    size_t n = strlen(path);
    if (rm_is_dir(path)) {
        char *p = malloc(n + 20);
        if (!p) return rm_errorf(RM_ENOMEM, "out of memory");
        snprintf(p, n + 20, "%s/tokenizer.json", path);
        int rc = rm_tokenizer_from_hf(tok, p);
        free(p);
        return rc;
    }
    if (n >= 5 && !strcmp(path + n - 5, ".json")) return rm_tokenizer_from_hf(tok, path);
    gguf_file g;
    int rc = gguf_open(&g, path);
    if (rc != RM_OK) return rc;
    rc = rm_tokenizer_from_gguf(tok, &g);
    gguf_close(&g);
    return rc;
}

// Tokenizes text into a malloc'd array; returns the count or a negative status.
static int encode_all(const rm_tokenizer *t, const char *text, size_t len, int bos, int special, int32_t **out) {
    int cap = (int)(len < 1000000 ? len : 1000000) + 16;
    for (;;) {
        int32_t *ids = malloc((size_t)cap * sizeof *ids);
        if (!ids) return rm_errorf(RM_ENOMEM, "out of memory");
        int n = rm_tokenize(t, text, len, bos, special, ids, cap);
        if (n < 0 || n <= cap) {
            if (n < 0) {
                free(ids);
                ids = NULL;
            }
            *out = ids;
            return n;
        }
        free(ids);
        cap = n;
    }
}

static int vocab_test(const rm_tokenizer *t, const char *path, int bos, int special) {
    char *buf;
    size_t len;
    if (rm_read_file(path, &buf, &len) != RM_OK) return cli_fail("reading the test file");
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t ns = sizeof sep - 1;
    size_t pos = 0;
    int rc = 0;
    while (pos < len) {
        const char *hit = memmem(buf + pos, len - pos, sep, ns);
        size_t end = hit ? (size_t)(hit - buf) : len;
        int32_t *ids;
        int n = encode_all(t, buf + pos, end - pos, bos, special, &ids);
        if (n < 0) {
            rc = cli_fail("tokenize");
            break;
        }
        for (int i = 0; i < n; i++) printf(" %d", (int)ids[i]);
        putchar('\n');
        free(ids);
        if (!hit) break;
        pos = end + ns;
    }
    free(buf);
    return rc;
}

static int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *file = NULL, *vtest = NULL;
    int ids_only = 0, bos = 0, special = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (cli_str(argc, argv, &i, "--model", "-m", &model) || cli_str(argc, argv, &i, "--prompt", "-p", &prompt) ||
            cli_str(argc, argv, &i, "--file", "-f", &file) || cli_str(argc, argv, &i, "--vocab-test", NULL, &vtest))
            continue;
        if (cli_flag(argc, argv, &i, "--ids", NULL)) {
            ids_only = 1;
            continue;
        }
        if (cli_flag(argc, argv, &i, "--bos", NULL)) {
            bos = 1;
            continue;
        }
        if (cli_flag(argc, argv, &i, "--special", NULL)) {
            special = 1;
            continue;
        }
        fprintf(stderr, "ramole tokenize: unknown option '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    if (!model || (!prompt && !file && !vtest)) {
        usage(stderr);
        return 2;
    }
    rm_tokenizer *t;
    if (load_tokenizer(model, &t) != RM_OK) return cli_fail("loading the tokenizer");
    int rc = 0;
    if (vtest) {
        rc = vocab_test(t, vtest, bos, special);
    } else {
        char *text = NULL;
        size_t len;
        if (file) {
            if (rm_read_file(file, &text, &len) != RM_OK) {
                rm_tokenizer_free(t);
                return cli_fail("reading the text");
            }
        } else {
            len = strlen(prompt);
        }
        int32_t *ids;
        int n = encode_all(t, text ? text : prompt, len, bos, special, &ids);
        if (n < 0) {
            rc = cli_fail("tokenize");
        } else if (ids_only) {
            for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
            putchar('\n');
        } else {
            char piece[1024];
            for (int i = 0; i < n; i++) {
                int k = rm_token_to_bytes(t, ids[i], 1, piece, (int)sizeof piece);
                if (k > (int)sizeof piece) k = (int)sizeof piece;
                printf("%6d -> '%.*s'\n", (int)ids[i], k < 0 ? 0 : k, piece);
            }
        }
        free(ids);
        free(text);
    }
    rm_tokenizer_free(t);
    return rc;
}

RM_COMMAND(tokenize, "text to token ids with a model's tokenizer", cmd_tokenize)
