// poolset.c — see poolset.h.
#include "retrieve/poolset.h"
#include "base/err.h"

#include <stdlib.h>
#include <string.h>

static int has_weights(const rm_adapter_info *a) { return a->weights && *a->weights; }

const rm_adapter_info *rm_pool_task_entry(const rm_adapter_info *list, int n, const char *task) {
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            const char *key = pass == 0 ? list[i].task : list[i].name;
            if (key && !strcmp(key, task) && has_weights(&list[i])) return &list[i];
        }
    return NULL;
}

int rm_pool_task_entries(const rm_adapter_info *list, int n, const char *task, int *idx) {
    int found = 0;
    for (int pass = 0; pass < 2 && !found; pass++)
        for (int i = 0; i < n; i++) {
            const char *key = pass == 0 ? list[i].task : list[i].name;
            if (key && !strcmp(key, task) && has_weights(&list[i])) idx[found++] = i;
        }
    return found;
}

// Makes a set of the adapters of entries e[0..n): loaded here (the set owns
// them) when cache is NULL, else taken from the cache (shared).
static int load_entries(const rm_adapter_info *const *e, int n, const rm_llama *base, rm_lora_cache *cache,
                        rm_lora_set **out) {
    rm_lora **l = calloc((size_t)(n ? n : 1), sizeof *l);
    const char **names = calloc((size_t)(n ? n : 1), sizeof *names),
               **tasks = calloc((size_t)(n ? n : 1), sizeof *tasks);
    int rc = !l || !names || !tasks ? rm_errorf(RM_ENOMEM, "out of memory") : RM_OK, loaded = 0;
    for (int i = 0; !rc && i < n; i++) {
        names[i] = e[i]->name;
        tasks[i] = e[i]->task;
        if (cache) {
            rc = rm_lora_cache_get(cache, e[i]->name, e[i]->weights, &l[i]);
        } else if ((rc = rm_lora_load_for(&l[i], e[i]->weights, base))) {
            rm_error_prefix(rc, "adapter '%s'", e[i]->name);
        } else {
            loaded++;
        }
    }
    if (!rc) rc = rm_lora_set_new(out, n, l, names, tasks, !cache); // an owning set frees the adapters, also on failure
    else
        for (int i = 0; i < loaded; i++) rm_lora_free(l[i]);
    free(l);
    free(names);
    free(tasks);
    return rc;
}

int rm_pool_load_set_shared(rm_pool *pool, const rm_llama *base, const char *const *names, int n, int by_task,
                            rm_lora_cache *cache, rm_lora_set **out) {
    *out = NULL;
    if (n < 1 || n > RM_SET_MAX) return rm_errorf(RM_EINVAL, "adapter set: %d adapters (1..%d)", n, RM_SET_MAX);
    rm_adapter_info *list = NULL;
    int n_list = 0, rc = rm_pool_list(pool, &list, &n_list);
    const rm_adapter_info **e = rc ? NULL : calloc((size_t)n, sizeof *e);
    if (!rc && !e) rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < n; i++) {
        if (by_task) e[i] = rm_pool_task_entry(list, n_list, names[i]);
        for (int j = 0; !by_task && j < n_list; j++)
            if (!strcmp(list[j].name, names[i])) e[i] = &list[j];
        if (!e[i])
            rc = rm_errorf(RM_ENOTFOUND, "the pool has no adapter %s '%s'", by_task ? "for task" : "called", names[i]);
        else if (!has_weights(e[i])) rc = rm_errorf(RM_EINVAL, "adapter '%s' of the pool has no weights", names[i]);
    }
    if (!rc) rc = load_entries(e, n, base, cache, out);
    free(e);
    if (list) rm_pool_free_list(list, n_list);
    return rc;
}

int rm_pool_load_set(rm_pool *pool, const rm_llama *base, const char *const *names, int n, int by_task,
                     rm_lora_set **out) {
    return rm_pool_load_set_shared(pool, base, names, n, by_task, NULL, out);
}

int rm_pool_load_set_all_shared(rm_pool *pool, const rm_llama *base, rm_lora_cache *cache, rm_lora_set **out) {
    *out = NULL;
    rm_adapter_info *list = NULL;
    int n_list = 0, n = 0, rc = rm_pool_list(pool, &list, &n_list);
    const rm_adapter_info **e = rc ? NULL : calloc((size_t)(n_list ? n_list : 1), sizeof *e);
    if (!rc && !e) rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < n_list; i++)
        if (has_weights(&list[i])) e[n++] = &list[i];
    if (!rc && n == 0) rc = rm_errorf(RM_ENOTFOUND, "the pool has no adapter with weights");
    if (!rc) rc = load_entries(e, n, base, cache, out);
    free(e);
    if (list) rm_pool_free_list(list, n_list);
    return rc;
}

int rm_pool_load_set_all(rm_pool *pool, const rm_llama *base, rm_lora_set **out) {
    return rm_pool_load_set_all_shared(pool, base, NULL, out);
}

int rm_pool_load_gate_shared(rm_pool *pool, const rm_llama *base, const char *gate_path, rm_lora_cache *cache,
                             rm_gate **gate, rm_lora_set **set) {
    *set = NULL;
    int rc = rm_gate_load(gate, gate_path, base);
    if (!rc &&
        (rc = rm_pool_load_set_shared(pool, base, (const char *const *)(*gate)->names, (*gate)->n, 0, cache, set)))
        rm_error_prefix(rc, "%s: the gate's adapters", gate_path);
    if (!rc && (rc = rm_gate_check_set(*gate, *set))) rm_error_prefix(rc, "%s", gate_path);
    if (rc) {
        rm_lora_set_free(*set);
        rm_gate_free(*gate);
        *set = NULL;
        *gate = NULL;
    }
    return rc;
}

int rm_pool_load_gate(rm_pool *pool, const rm_llama *base, const char *gate_path, rm_gate **gate, rm_lora_set **set) {
    return rm_pool_load_gate_shared(pool, base, gate_path, NULL, gate, set);
}
