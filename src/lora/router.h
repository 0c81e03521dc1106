// router.h — RouterLoRA files: the trained router of the RAMoLE paper, one
// small LoRA per adapted linear (A_r [r, in], B_r [out, r], scale s_r) whose
// output is the query that weighs the k retrieved adapters' outputs (see
// compose.h, router mode, and docs/router.md).
//
// In memory a router is an rm_lora (its modules are the router's A_r, B_r,
// s_r); it never acts as an adapter itself, only through a router plan.
//
// File: a GGUF LoRA file (tensors blk.N.<linear>.weight.lora_a / lora_b,
// adapter.lora.alpha) whose general.type is "ramole.router", with
//   ramole.router.version       u32  1
//   ramole.router.rank          u32  the router's rank
//   ramole.router.targets       str  "q,v", ... the linears it covers
//   ramole.router.trained_k     u32  experts per token in training (information)
//   ramole.router.trained_with  str  "fixed" (the same experts for every
//                               example) or "retrieval" (each example's own
//                               top-k from a pool); files from before it lack it
//   ramole.router.lora_dropout  f32  retrieval: the probability an example's
//                               own task's adapter was left out of the pool
//   ramole.router.base.*        the base it was trained on: architecture (str),
//                               n_layer, n_embd, n_ff, n_vocab (u32) and
//                               fingerprint (u64, rm_router_base_fingerprint)
// Loading checks all of them against the base it is given.
#ifndef RM_LORA_ROUTER_H
#define RM_LORA_ROUTER_H
#include "lora/adapter.h"

// A checksum of the base's identity: its shape and the bytes of its token
// embedding (first MiB) and norm weights. Equal for the same model file
// whatever the path; differs for another model of the same shape.
uint64_t rm_router_base_fingerprint(const rm_llama *m);

// How a router was trained (information the file records).
typedef struct rm_router_training {
    int trained_k;      // experts per token (0: not recorded)
    char with[16];      // "fixed", "retrieval", or "" (not recorded)
    float lora_dropout; // retrieval: the lora dropout (NaN: not recorded)
} rm_router_training;

// Writes router (bound to base) to path, trained with a fixed set of trained_k experts.
int rm_router_save(const rm_lora *router, const rm_llama *base, int trained_k, const char *path);
// The same recording how it was trained (tr->with "fixed" or "retrieval").
int rm_router_save_trained(const rm_lora *router, const rm_llama *base, const rm_router_training *tr, const char *path);
// Reads what a router file records about its training (keys it lacks: 0, "", NaN).
int rm_router_read_training(const char *path, rm_router_training *tr);
// Loads a router file and binds it to base. A file that is no router, a
// router of another base (shape or fingerprint) or a corrupt file is refused
// with a message naming the file and the difference.
int rm_router_load(rm_lora **out, const char *path, const rm_llama *base);

// The base-model keys a file tied to a base carries (routers, gates):
// <prefix>.base.architecture (str), .n_layer, .n_embd, .n_ff, .n_vocab (u32)
// and .fingerprint (u64). Check refuses a file of another base with a message
// naming the file, `what` it is ("router", "gate") and the difference.
struct gguf_writer;
struct gguf_file;
int rm_base_meta_write(struct gguf_writer *gw, const char *prefix, const rm_llama *base);
int rm_base_meta_check(const struct gguf_file *g, const char *prefix, const char *what, const rm_llama *base);
#endif
