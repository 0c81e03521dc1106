// cli_llamacpp.c — what `bench --compare llamacpp` and `bench-lora --compare
// llamacpp` share: where llama.cpp's drivers are, and quoting for popen.
#include "cli.h"

#include <stdlib.h>
#include <string.h>

const char *cli_llamacpp_dir(const char *given, char *buf, size_t cap) {
    if (given) return given;
    const char *env = getenv("RAMOLE_LLAMACPP_BENCH"), *home = getenv("HOME");
    if (env && *env) return env;
    snprintf(buf, cap, "%s/.cache/ramole-llamacpp-bench", home ? home : ".");
    return buf;
}

int cli_sh_quote(const char *s, char *out, size_t cap) {
    size_t n = 0;
    if (cap < 3) return -1;
    out[n++] = '\'';
    for (; *s; s++) {
        const char *piece = *s == '\'' ? "'\\''" : NULL;
        size_t len = piece ? 4 : 1;
        if (n + len + 2 > cap) return -1;
        if (piece) memcpy(out + n, piece, len);
        else out[n] = *s;
        n += len;
    }
    out[n++] = '\'';
    out[n] = 0;
    return 0;
}
