// tokenizer_hf.c — tokenizers from a Hugging Face tokenizer.json.
#include "base/err.h"
#include "model/tokenizer_impl.h"

int rm_tokenizer_from_hf(rm_tokenizer **out, const char *tokenizer_json_path) {
    *out = NULL;
    return rm_errorf(RM_EUNSUPPORTED, "%s: tokenizer.json loading is not implemented yet", tokenizer_json_path);
}
