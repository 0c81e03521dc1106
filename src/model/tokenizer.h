// tokenizer.h — text <-> token ids for real model vocabularies.
//
// Built from a GGUF file's tokenizer.ggml.* metadata (model = "llama" SPM,
// "gpt2" byte-level BPE with the pre-tokenizer named by tokenizer.ggml.pre,
// "bert" WordPiece) or from a Hugging Face tokenizer.json.
#ifndef RM_MODEL_TOKENIZER_H
#define RM_MODEL_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

#include "format/gguf.h"

typedef struct rm_tokenizer rm_tokenizer;

int rm_tokenizer_from_gguf(rm_tokenizer **out, const gguf_file *g);
int rm_tokenizer_from_hf(rm_tokenizer **out, const char *tokenizer_json_path);
void rm_tokenizer_free(rm_tokenizer *t);
// Writes the tokenizer as tokenizer.ggml.* metadata (plus ramole.tokenizer.*
// keys for what those cannot express, see tokenizer_impl.h), so that
// rm_tokenizer_from_gguf on the written file gives the same tokenizer.
int rm_tokenizer_write_gguf(const rm_tokenizer *t, gguf_writer *w);
// An add_meta hook for hfdir_convert_to_gguf_ex: `dir` (a const char *) is the
// model directory; writes DIR/tokenizer.json, when present, with
// rm_tokenizer_write_gguf.
int rm_tokenizer_hfdir_meta(void *dir, gguf_writer *w);

int rm_tokenizer_n_vocab(const rm_tokenizer *t);
int32_t rm_tokenizer_bos(const rm_tokenizer *t); // -1 if none
int32_t rm_tokenizer_eos(const rm_tokenizer *t); // -1 if none
int rm_tokenizer_add_bos(const rm_tokenizer *t); // model's default for add_bos
// 1 if id ends generation (EOS, EOT, <|im_end|>, ...).
int rm_tokenizer_is_eog(const rm_tokenizer *t, int32_t id);

// Encodes text[0..len). add_bos adds BOS (WordPiece: [CLS] before and [SEP]
// after); parse_special lets control-token strings in the text (e.g.
// "<|im_start|>") become single ids (user-defined tokens always do, as in
// Hugging Face). Writes at most cap ids (ids may be NULL with cap 0);
// returns the total count (call again with a larger buffer if > cap) or a
// negative status. Any bytes are accepted (ill-formed UTF-8 included).
// Safe to call from several threads on one tokenizer.
int rm_tokenize(const rm_tokenizer *t, const char *text, size_t len, int add_bos, int parse_special, int32_t *ids,
                int cap);

// The bytes token id stands for (byte-fallback and byte-level decoded, SPM's
// space marker as a space). Returns the byte count (may exceed cap: then
// call again), negative on a bad id. Control tokens give "" unless
// render_special.
int rm_token_to_bytes(const rm_tokenizer *t, int32_t id, int render_special, char *buf, int cap);

// Streaming detokenizer: holds back incomplete UTF-8 sequences between calls
// and strips the leading space SPM adds after BOS.
typedef struct rm_detok {
    const rm_tokenizer *t;
    char pending[8];
    int n_pending;
    int n_emitted;
} rm_detok;
void rm_detok_init(rm_detok *d, const rm_tokenizer *t);
// Appends the text for `id` to out (cap bytes); returns bytes written.
int rm_detok_push(rm_detok *d, int32_t id, char *out, int cap);
// Flushes any held-back bytes (invalid UTF-8 is replaced by U+FFFD).
int rm_detok_flush(rm_detok *d, char *out, int cap);
// The same two appending to a string builder (no buffer to size): the text
// for `id`, or with id < 0 the held-back bytes. Returns the bytes appended,
// -1 when out of memory.
struct rm_sb;
int rm_detok_push_sb(rm_detok *d, int32_t id, struct rm_sb *sb);

// Renders a chat (roles "system"/"user"/"assistant") with the model's chat
// template (known families matched; unknown -> documented plain format),
// adding the assistant prefix. Returns a malloc'd string or NULL (error set).
typedef struct rm_chat_msg {
    const char *role, *content;
} rm_chat_msg;
char *rm_chat_render(const rm_tokenizer *t, const char *template_str, const rm_chat_msg *msgs, int n);
// ---- extras ----
// Longest token text in bytes; "spm", "bpe" or "wordpiece"; id of an exact
// token text (-1 if none).
int rm_tokenizer_max_token_len(const rm_tokenizer *t);
const char *rm_tokenizer_kind(const rm_tokenizer *t);
int32_t rm_tokenizer_find(const rm_tokenizer *t, const char *text);
// The word cache (on by default, ~3 MB): off frees it. Not
// thread-safe against concurrent rm_tokenize calls; set it up front.
void rm_tokenizer_set_cache(rm_tokenizer *t, int on);
// An `out` buffer of this many bytes always holds one rm_detok_push result.
int rm_detok_max_bytes(const rm_tokenizer *t);

// Learns up to n_merges byte-level BPE merges from text[0..len), cut into
// pieces by t's pre-tokenizer (t: a byte-level BPE tokenizer, e.g. the byte
// vocabulary of `ramole train`): greedily the most frequent adjacent pair of
// symbols, weighted by piece counts, ties to the smaller ids; stops early when
// no pair occurs twice. *merges gets them in rank order in the GGUF form
// "left right" (GPT-2 byte-to-unicode mapping), *n their count; free each
// string and the array.
int rm_bpe_learn(const rm_tokenizer *t, const char *text, size_t len, int n_merges, char ***merges, int *n);
// tokenizer.chat_template of the model (NULL if none), and the family
// rm_chat_render would use: "chatml", "llama3", "llama2", "mistral", "gemma"
// or "plain" (unknown or no template: "System: ...\n\nUser: ...\n\n" then
// "Assistant:"). template_str NULL means the model's.
const char *rm_tokenizer_chat_template(const rm_tokenizer *t);
const char *rm_chat_family(const rm_tokenizer *t, const char *template_str);
#endif
