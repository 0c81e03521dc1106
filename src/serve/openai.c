// openai.c — answers in OpenAI's formats: a text_completion or
// chat.completion object, and the server-sent events of a streamed one.
#include "serve/server_impl.h"
#include "base/err.h"
#include "base/json.h"

#include <string.h>

// The adapters a request used, with their scores: "adapters": [...].
static void adapters_json(rm_sb *b, const rm_pick *pk) {
    rm_sb_puts(b, "\"adapters\": [");
    for (int i = 0; i < pk->n; i++) {
        rm_sb_puts(b, i ? ", {\"name\": " : "{\"name\": ");
        rm_sb_json_str(b, pk->name[i], strlen(pk->name[i]));
        rm_sb_puts(b, ", \"score\": ");
        rm_sb_json_num(b, pk->score[i]);
        rm_sb_puts(b, "}");
    }
    rm_sb_puts(b, "]");
}

void openai_answer(job *j, const int32_t *tokens, int n, const char *reason) {
    rm_server *s = j->s;
    rm_sb text, b;
    rm_sb_init(&text);
    rm_sb_init(&b);
    rm_detok d;
    rm_detok_init(&d, s->m->tok);
    for (int i = 0; i < n; i++)
        if (!rm_tokenizer_is_eog(s->m->tok, tokens[i])) rm_detok_push_sb(&d, tokens[i], &text);
    rm_detok_push_sb(&d, -1, &text);
    rm_sb_printf(&b, "{\"id\": \"%s-%ld\", \"object\": \"%s\", \"model\": ", j->chat ? "chatcmpl" : "cmpl", j->id,
                 j->chat ? "chat.completion" : "text_completion");
    rm_sb_json_str(&b, s->p.model, strlen(s->p.model));
    rm_sb_puts(&b, j->chat ? ", \"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": "
                           : ", \"choices\": [{\"index\": 0, \"text\": ");
    rm_sb_json_str(&b, text.buf ? text.buf : "", text.len);
    if (j->chat) rm_sb_puts(&b, "}");
    rm_sb_printf(&b, ", \"finish_reason\": \"%s\", \"token_ids\": [", reason);
    for (int i = 0; i < n; i++) rm_sb_printf(&b, i ? ", %d" : "%d", tokens[i]);
    rm_sb_printf(&b, "]}], \"usage\": {\"prompt_tokens\": %d, \"completion_tokens\": %d, \"total_tokens\": %d}, ", j->n_prompt, n,
                 j->n_prompt + n);
    adapters_json(&b, &j->pick);
    rm_sb_puts(&b, "}\n");
    if (b.oom || text.oom) rm_http_reply_error(j->r, 500, "out of memory");
    else rm_http_reply(j->r, 200, "application/json", b.buf, b.len);
    rm_sb_free(&text);
    rm_sb_free(&b);
}

// One server-sent event with a piece of text (and the finish reason at the end).
static void stream_event(job *j, const char *text, size_t len, const char *reason) {
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_printf(&b, "data: {\"id\": \"%s-%ld\", \"object\": \"%s\", \"choices\": [{\"index\": 0, ", j->chat ? "chatcmpl" : "cmpl",
                 j->id, j->chat ? "chat.completion.chunk" : "text_completion");
    rm_sb_puts(&b, j->chat ? "\"delta\": {\"content\": " : "\"text\": ");
    rm_sb_json_str(&b, text, len);
    rm_sb_puts(&b, j->chat ? "}" : "");
    if (reason) rm_sb_printf(&b, ", \"finish_reason\": \"%s\"}]}\n\n", reason);
    else rm_sb_puts(&b, ", \"finish_reason\": null}]}\n\n");
    if (!b.oom) rm_http_stream_write(j->r, b.buf, b.len);
    rm_sb_free(&b);
}

// The text of id (id < 0: the held-back bytes) as one event, when there is any.
static void stream_text(job *j, int32_t id, const char *reason) {
    rm_sb piece;
    rm_sb_init(&piece);
    rm_detok_push_sb(&j->detok, id, &piece);
    if (piece.len || reason) stream_event(j, piece.buf ? piece.buf : "", piece.len, reason);
    rm_sb_free(&piece);
}

void openai_stream_token(void *user, int32_t id) {
    job *j = user;
    if (!rm_tokenizer_is_eog(j->s->m->tok, id)) stream_text(j, id, NULL);
}

void openai_stream_done(job *j, const int32_t *tokens, const char *reason) {
    if (!tokens) {
        rm_sb b;
        rm_sb_init(&b);
        rm_sb_puts(&b, "data: ");
        rm_http_error_json(&b, 500, rm_last_error());
        rm_sb_puts(&b, "\n");
        if (!b.oom) rm_http_stream_write(j->r, b.buf, b.len);
        rm_sb_free(&b);
    } else {
        stream_text(j, -1, reason);
    }
    rm_http_stream_write(j->r, "data: [DONE]\n\n", 14);
    rm_http_stream_close(j->r);
}
