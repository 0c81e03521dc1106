// session.c — see session.h.
#include "lora/session.h"
#include "base/err.h"
#include "lora/router.h"

#include <string.h>

int rm_lora_session_init(rm_lora_session *s, const rm_llama *m, rm_threadpool *tp, int n, const char *const *specs,
                         int mode, const char *router_path) {
    memset(s, 0, sizeof *s);
    if (n < 1 || n > RM_PLAN_MAX) return rm_errorf(RM_EINVAL, "lora: %d adapters (1..%d)", n, RM_PLAN_MAX);
    float w[RM_PLAN_MAX];
    int rc = RM_OK;
    for (int i = 0; i < n && !rc; i++) {
        char path[4096];
        int has_w;
        rc = rm_lora_parse_spec(specs[i], path, sizeof path, &w[i], &has_w);
        if (!rc && has_w && mode == RM_COMPOSE_ROUTER)
            rc = rm_errorf(RM_EINVAL, "lora: %s: the router weighs the adapters itself; give no weight", specs[i]);
        if (!rc && !has_w) w[i] = 1.0f / (float)n;
        if (!rc) rc = rm_lora_load_for(&s->lora[i], path, m);
        if (!rc) s->n = i + 1;
    }
    if (!rc && mode == RM_COMPOSE_ROUTER) {
        if (!router_path) rc = rm_errorf(RM_EINVAL, "lora: the router composition needs a router file (--router FILE)");
        else if (!(rc = rm_router_load(&s->router, router_path, m)))
            rc = rm_lora_plan_init_router(&s->plan, n, s->lora, s->router);
    } else if (!rc) {
        rm_compose_mode cm = mode >= 0 ? (rm_compose_mode)mode : n == 1 ? RM_COMPOSE_SELECTION : RM_COMPOSE_MIXTURE;
        rc = rm_lora_plan_init(&s->plan, cm, n, s->lora, w, NULL);
    }
    if (!rc && !(s->batch = rm_lora_batch_new(tp))) rc = rm_errorf(RM_ENOMEM, "out of memory");
    if (rc) {
        rm_lora_session_free(s);
        return rc;
    }
    s->hook = rm_lora_batch_hook(s->batch);
    return RM_OK;
}

void rm_lora_session_free(rm_lora_session *s) {
    rm_lora_plan_free(&s->plan);
    rm_lora_batch_free(s->batch);
    for (int i = 0; i < s->n; i++) rm_lora_free(s->lora[i]);
    rm_lora_free(s->router);
    memset(s, 0, sizeof *s);
}
