// recipe.h — the named embedder configurations of the Flan benchmark: how
// each is fitted and trained from a pool and a seen/unseen task split.
//
//   "lexical"   TF-IDF; its IDF is fitted on every pool sample input (the
//               indexed corpus; no labels are used).
//   "hashproj"  learned projection; IDF and contrastive training use only the
//               sample inputs of the seen tasks.
//   "script"    the non-ASCII characters of a text (embed.h), for hybrids.
//   "hybrid"    lexical + shape_weight x shape + script_weight x script
//               (+ hybrid_weight x hashproj when hybrid_weight > 0); cosine
//               scores summed.
//   "hybrid-learned"  "hybrid" with the learned part on (hybrid_weight 0.3 if
//               unset) trained for the hybrid's score (residual).
// Unseen tasks' samples only ever build their keys (and the lexical IDF).
#ifndef RM_EVAL_RECIPE_H
#define RM_EVAL_RECIPE_H
#include "retrieve/embed.h"
#include "eval/flan.h"
#include "retrieve/train.h"

#define RM_RECIPE_DEFAULT "hybrid"

typedef struct rm_recipe_params {
    rm_feat_params lex;
    rm_hashproj_params proj;
    rm_contrastive_params train;
    int idf_by_adapter;          // lexical IDF counts adapters (sample groups), not samples
    int center_lex, center_proj; // centre by the corpus mean (rm_embedder_fit_center)
    float hybrid_weight;         // weight of the learned part in "hybrid" (lexical: 1; 0: none)
    float shape_weight;          // weight of the shape part in "hybrid" (0: none)
    float script_weight;         // weight of the script part in "hybrid" (0: none)
    int residual;                // hybrid: train the projection for the hybrid's score
                                 // (lexical score fixed), not on its own
    const char *prefix;          // NULL: RM_EMBED_DEFAULT_PREFIX
} rm_recipe_params;

rm_recipe_params rm_recipe_default_params(void);
// seen[t] marks the training tasks (may be NULL: none).
int rm_recipe_build(const char *name, const rm_flan_pool *pool, const unsigned char *seen, const rm_recipe_params *p,
                    rm_embedder **out);
#endif
