// train.h — contrastive training of the learned "hashproj" embedder.
//
// InfoNCE with temperature (the paper's instruction fine-tuning of the
// retriever), in the form that matches retrieval by mean keys: a batch holds
// `per_task` samples of each of `tasks_per_batch` tasks; each sample is the
// query, the key of its own task (mean of the task's other batch samples) is
// the positive and the keys of the other tasks in the batch are the negatives.
// Sparse Adam updates only the projection rows of features in the batch;
// features in fewer than min_df training texts stay frozen, so the model
// cannot memorise single samples by their unique content.
#ifndef RM_RETRIEVE_TRAIN_H
#define RM_RETRIEVE_TRAIN_H
#include <stdint.h>

#include "retrieve/embed.h"

typedef struct rm_contrastive_params {
    int steps;
    int tasks_per_batch; // capped at the number of tasks
    int per_task;        // samples per task in a batch (>= 2)
    float temperature;
    float lr;
    float weight_decay; // pulls W back towards its initial value (0: off)
    int min_df;         // only features in >= min_df training texts are trained
                        // (rarer ones would let it memorise single samples)
    uint64_t seed;
    int n_threads;
    int progress; // draw a progress line on stderr (base/progress.h)
} rm_contrastive_params;

rm_contrastive_params rm_contrastive_default_params(void);

// Trains e (kind "hashproj") on texts[i] with task label[i] (0..n_labels-1;
// labels with fewer than 2 texts are skipped). base_sim (may be NULL) holds
// [n][n] dot products of the texts' unit embeddings under a fixed base
// embedder whose key scores are added with base_weight (train the learned
// part of a hybrid for the hybrid's score). *final_loss (may be NULL) gets
// the mean loss of the last 10% of steps.
int rm_hashproj_train(rm_embedder *e, const char *const *texts, const int *label, int n, const float *base_sim,
                      float base_weight, const rm_contrastive_params *p, float *final_loss);
#endif
