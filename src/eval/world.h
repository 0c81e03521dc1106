// world.h — a synthetic mixed-task world in which the RAMoLE experiment can be
// run end to end on one machine: tasks in clusters (classification, extraction,
// arithmetic, counting, string transforms, translation between two constructed
// languages and English, title / entity generation), a text corpus for a base
// model that knows the world but not the tasks, and the paper's file formats.
//
// Everything is a function of the seed: the constructed languages' lexicons,
// every request, every sample. A request is an instruction in natural words
// drawn from at least five phrasings of its task, with entities and numbers
// drawn fresh; no request text appears twice across training, validation,
// pool samples and test.
//
// Within a cluster the tasks share a skill and an answer format and differ in
// surface (domain vocabulary, instruction wording, passage style, language),
// so that a sibling's adapter helps on a task whose own adapter is missing and
// a foreign cluster's adapter does not (its answers have another format).
//
// Files written by rm_world_make (dir created when absent):
//   world.json           seed, size, template, clusters and tasks (name,
//                        cluster, metric; adapter_steps where a task's
//                        adapter trains longer than "adapter"'s steps),
//                        the adapters' and the experiment's settings
//   config.json          the pool in the paper's format: [{"model_name",
//                        "domain", "sample": [20 x {"inputs", "targets"}]}]
//   combined_test.json   [{"inputs", "targets", "task", "domain", "metric"}]
//   tasks/NAME.jsonl     training data of each task ({"inputs", "targets", "task"})
//   tasks/NAME.valid.jsonl  a validation split of each task (same shape)
//   samples/NAME.jsonl   the 20 pool samples of each task ({"inputs", "targets"})
//   corpus.txt           the base model's training text
//   copying.jsonl        its first steps: lists read twice (the curriculum of base.json)
//   base.json            the base model's shape and optimisation (`ramole train`)
//   template.txt         the prompt template ({inputs} replaced)
#ifndef RM_EVAL_WORLD_H
#define RM_EVAL_WORLD_H
#include <stdint.h>

#include "base/json.h"

typedef enum { RM_WORLD_SMALL, RM_WORLD_FULL } rm_world_size;
int rm_world_size_parse(const char *s, rm_world_size *out); // "small" | "full"
const char *rm_world_size_name(rm_world_size s);

typedef struct rm_world_task {
    const char *name, *cluster, *metric; // metric: em | rouge | bleu
} rm_world_task;

// The tasks of a world of this size, clusters contiguous.
int rm_world_tasks(rm_world_size size, const rm_world_task **tasks);

// Counts per task and the base corpus size for a world of this size.
typedef struct rm_world_plan {
    int n_train, n_valid, n_test, n_samples; // examples per task
    long corpus_bytes, copying_bytes;        // base model text and its first steps' (approximate)
} rm_world_plan;
rm_world_plan rm_world_plan_for(rm_world_size size);

// The world's generator state (the constructed languages, made from the seed).
typedef struct rm_world rm_world;
int rm_world_new(rm_world **out, uint64_t seed);
void rm_world_free(rm_world *w);
// Appends one example of task `task` (an index into rm_world_tasks of the
// world's size; the catalogue is the same list for both sizes, the small one a
// subset by name) to in / out, drawing from *rng.
int rm_world_example(const rm_world *w, const char *task, uint64_t *rng, rm_sb *in, rm_sb *out);
// Appends about `bytes` of base-model text (documents separated by blank lines).
void rm_world_corpus(const rm_world *w, uint64_t *rng, long bytes, rm_sb *out);
// The base model's first data (its curriculum, `ramole train`'s
// "curriculum"): lists read twice as JSON lines, the first reading the
// inputs and the second the targets, so that it learns early to look back
// at what it has read.
void rm_world_copying_corpus(const rm_world *w, uint64_t *rng, long bytes, rm_sb *out);

// What rm_world_make wrote.
typedef struct rm_world_report {
    int n_tasks, n_clusters, n_train, n_valid, n_test, n_samples;
    long corpus_bytes;
} rm_world_report;
// Writes a world of this size and seed into dir (see the file list above).
int rm_world_make(const char *dir, uint64_t seed, rm_world_size size, rm_world_report *rep);

// The tasks of the world in dir (its world.json), in order: names[i] and
// clusters[i] (malloc'd, free with rm_world_free_tasks). A task without a
// usable name or cluster, or a name given twice, is refused naming the file
// and the task.
int rm_world_read_tasks(const char *dir, char ***names, char ***clusters, int *n);
void rm_world_free_tasks(char **names, char **clusters, int n);

// The prompt template of every world ({inputs} replaced by the request).
extern const char *const rm_world_template;
#endif
