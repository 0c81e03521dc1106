// tokenizer_chat.c — chat templates: the known families, recognised by
// marker strings in tokenizer.chat_template, rendered by hand (no Jinja).
//
//   ChatML / Qwen   "<|im_start|>"          <|im_start|>user\nHi<|im_end|>\n ... <|im_start|>assistant\n
//   Llama 3         "<|start_header_id|>"   <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|> ...
//   Llama 2         "[INST]" and "<<SYS>>"  [INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST] A </s><s>[INST] ...
//   Mistral         "[INST]"                [INST] S\n\nHi [/INST]A</s>[INST] ...
//   Gemma           "<start_of_turn>"       <start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n
//   plain (unknown or no template)          System: S\n\nUser: Hi\n\nAssistant: A\n\nAssistant:
//
// The BOS token is not rendered: tokenize the result with add_bos (the
// model's rm_tokenizer_add_bos) and parse_special = 1.
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/json.h"
#include "model/tokenizer_impl.h"

typedef enum { CHAT_PLAIN, CHAT_CHATML, CHAT_LLAMA3, CHAT_LLAMA2, CHAT_MISTRAL, CHAT_GEMMA } chat_kind;

static chat_kind detect(const char *tmpl) {
    if (!tmpl) return CHAT_PLAIN;
    if (strstr(tmpl, "<|im_start|>")) return CHAT_CHATML;
    if (strstr(tmpl, "<|start_header_id|>")) return CHAT_LLAMA3;
    if (strstr(tmpl, "[INST]")) return strstr(tmpl, "<<SYS>>") ? CHAT_LLAMA2 : CHAT_MISTRAL;
    if (strstr(tmpl, "<start_of_turn>")) return CHAT_GEMMA;
    return CHAT_PLAIN;
}

// Appends s without leading/trailing whitespace.
static void put_trimmed(rm_sb *sb, const char *s) {
    size_t a = 0, b = strlen(s);
    while (a < b && strchr(" \t\r\n", s[a])) a++;
    while (b > a && strchr(" \t\r\n", s[b - 1])) b--;
    rm_sb_putn(sb, s + a, b - a);
}

static int is_role(const rm_chat_msg *m, const char *role) { return m->role && !strcmp(m->role, role); }

static void render_chatml(rm_sb *sb, const rm_chat_msg *msgs, int n) {
    for (int i = 0; i < n; i++) rm_sb_printf(sb, "<|im_start|>%s\n%s<|im_end|>\n", msgs[i].role, msgs[i].content);
    rm_sb_puts(sb, "<|im_start|>assistant\n");
}

static void render_llama3(rm_sb *sb, const rm_chat_msg *msgs, int n) {
    for (int i = 0; i < n; i++) {
        rm_sb_printf(sb, "<|start_header_id|>%s<|end_header_id|>\n\n", msgs[i].role);
        put_trimmed(sb, msgs[i].content);
        rm_sb_puts(sb, "<|eot_id|>");
    }
    rm_sb_puts(sb, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

// Llama 2 and Mistral: the system prompt goes into the first user turn.
static void render_inst(rm_sb *sb, const rm_chat_msg *msgs, int n, int llama2) {
    const char *sys = NULL;
    int first_user = 1, turns = 0;
    for (int i = 0; i < n; i++) {
        const rm_chat_msg *m = &msgs[i];
        if (is_role(m, "system")) {
            sys = m->content;
            continue;
        }
        if (is_role(m, "assistant")) {
            rm_sb_puts(sb, llama2 ? " " : "");
            put_trimmed(sb, m->content);
            rm_sb_puts(sb, llama2 ? " </s>" : "</s>");
            continue;
        }
        if (turns++ > 0 && llama2) rm_sb_puts(sb, "<s>");
        rm_sb_puts(sb, "[INST] ");
        if (sys && first_user) {
            if (llama2) {
                rm_sb_puts(sb, "<<SYS>>\n");
                put_trimmed(sb, sys);
                rm_sb_puts(sb, "\n<</SYS>>\n\n");
            } else {
                put_trimmed(sb, sys);
                rm_sb_puts(sb, "\n\n");
            }
        }
        first_user = 0;
        put_trimmed(sb, m->content);
        rm_sb_puts(sb, " [/INST]");
    }
}

static void render_gemma(rm_sb *sb, const rm_chat_msg *msgs, int n) {
    const char *sys = NULL;
    for (int i = 0; i < n; i++) {
        const rm_chat_msg *m = &msgs[i];
        if (is_role(m, "system")) {
            sys = m->content;
            continue;
        }
        rm_sb_printf(sb, "<start_of_turn>%s\n", is_role(m, "assistant") ? "model" : m->role);
        if (sys && is_role(m, "user")) {
            put_trimmed(sb, sys);
            rm_sb_puts(sb, "\n\n");
            sys = NULL;
        }
        put_trimmed(sb, m->content);
        rm_sb_puts(sb, "<end_of_turn>\n");
    }
    rm_sb_puts(sb, "<start_of_turn>model\n");
}

static void render_plain(rm_sb *sb, const rm_chat_msg *msgs, int n) {
    for (int i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        const char *label = !strcmp(r, "system")      ? "System"
                            : !strcmp(r, "assistant") ? "Assistant"
                            : !strcmp(r, "user")      ? "User"
                                                      : r;
        rm_sb_printf(sb, "%s: %s\n\n", label, msgs[i].content);
    }
    rm_sb_puts(sb, "Assistant:");
}

char *rm_chat_render(const rm_tokenizer *t, const char *template_str, const rm_chat_msg *msgs, int n) {
    if (n < 0 || (n > 0 && !msgs)) {
        rm_errorf(RM_EINVAL, "rm_chat_render: bad message list");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content) {
            rm_errorf(RM_EINVAL, "rm_chat_render: message %d has no role or content", i);
            return NULL;
        }
    const char *tmpl = template_str ? template_str : t ? t->chat_template : NULL;
    rm_sb sb;
    rm_sb_init(&sb);
    switch (detect(tmpl)) {
    case CHAT_CHATML: render_chatml(&sb, msgs, n); break;
    case CHAT_LLAMA3: render_llama3(&sb, msgs, n); break;
    case CHAT_LLAMA2: render_inst(&sb, msgs, n, 1); break;
    case CHAT_MISTRAL: render_inst(&sb, msgs, n, 0); break;
    case CHAT_GEMMA: render_gemma(&sb, msgs, n); break;
    default: render_plain(&sb, msgs, n); break;
    }
    if (sb.oom) {
        rm_sb_free(&sb);
        rm_errorf(RM_ENOMEM, "rm_chat_render: out of memory");
        return NULL;
    }
    return sb.buf ? sb.buf : strdup("");
}

const char *rm_tokenizer_chat_template(const rm_tokenizer *t) { return t ? t->chat_template : NULL; }

const char *rm_chat_family(const rm_tokenizer *t, const char *template_str) {
    static const char *names[] = {"plain", "chatml", "llama3", "llama2", "mistral", "gemma"};
    return names[detect(template_str ? template_str : t ? t->chat_template : NULL)];
}
