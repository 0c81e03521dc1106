// tokenizer_chat.c — chat templates.
#include <stddef.h>

#include "base/err.h"
#include "model/tokenizer_impl.h"

char *rm_chat_render(const rm_tokenizer *t, const char *template_str, const rm_chat_msg *msgs, int n) {
    (void)t; (void)template_str; (void)msgs; (void)n;
    rm_errorf(RM_EUNSUPPORTED, "chat templates are not implemented yet");
    return NULL;
}
