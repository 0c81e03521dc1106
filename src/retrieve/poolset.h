// poolset.h — adapter sets (lora/set.h) made of a pool's adapters: the fixed
// sets the MoE / SMEAR gates and Arrow route over (`ramole gate train`,
// `ramole eval --compose moe|arrow`).
#ifndef RM_RETRIEVE_POOLSET_H
#define RM_RETRIEVE_POOLSET_H
#include "lora/cache.h"
#include "lora/gate.h"
#include "retrieve/pool.h"

// The entry of list[0..n) for a task: the first adapter with weights whose
// task equals it, or else (none) whose name does; NULL when none (the rule
// of `eval --oracle` and `--exclude-own`).
const rm_adapter_info *rm_pool_task_entry(const rm_adapter_info *list, int n, const char *task);

// The entries of list[0..n) for a task, by the same rule: every adapter with
// weights whose task equals it, or else (none) every one whose name does;
// their indices into idx (room for n), their number returned.
int rm_pool_task_entries(const rm_adapter_info *list, int n, const char *task, int *idx);

// A set, owning its adapters (loaded from their weights, bound to base), of
// the pool's adapters called names[0..n), in that order; by_task: names are
// tasks, each resolved by rm_pool_task_entry. A name the pool lacks, or whose
// adapter has no weights, is refused with a message naming it.
int rm_pool_load_set(rm_pool *pool, const rm_llama *base, const char *const *names, int n, int by_task,
                     rm_lora_set **out);
// Every adapter of the pool that has weights, in the pool's order (by id).
int rm_pool_load_set_all(rm_pool *pool, const rm_llama *base, rm_lora_set **out);
// The same two, the adapters taken from cache (loaded there on first use,
// shared with its other users; the set does not own them).
int rm_pool_load_set_shared(rm_pool *pool, const rm_llama *base, const char *const *names, int n, int by_task,
                            rm_lora_cache *cache, rm_lora_set **out);
int rm_pool_load_set_all_shared(rm_pool *pool, const rm_llama *base, rm_lora_cache *cache, rm_lora_set **out);
// A trained gate file (lora/gate.h, checked against base) and its set, rebuilt
// from the pool by the adapter names the file lists.
int rm_pool_load_gate(rm_pool *pool, const rm_llama *base, const char *gate_path, rm_gate **gate, rm_lora_set **set);
int rm_pool_load_gate_shared(rm_pool *pool, const rm_llama *base, const char *gate_path, rm_lora_cache *cache,
                             rm_gate **gate, rm_lora_set **set);
#endif
