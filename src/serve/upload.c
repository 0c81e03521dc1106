// upload.c — POST /v1/adapters with the adapter's files in the body
// (multipart/form-data): a contributor uploads from another machine.
//
// Fields: "name", "samples" (a JSON list of sample inputs), "task" and
// "domain" (optional); files: one GGUF adapter, or a PEFT adapter's
// adapter_config.json and adapter_model.safetensors. The files are written
// to a folder of their own inside the pool's folder, loaded and checked
// against the model; a refused adapter leaves nothing behind. An accepted
// one is kept under the SHA-256 of its content (the GGUF file; for PEFT the
// config followed by the weights), POOL/adapters/HASH/, with its absolute
// path in the pool (the same content uploaded twice is stored once).
#include "serve/server_impl.h"
#include "serve/multipart.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "base/sha256.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAX_PARTS = 16 };

static const char *const k_files[3] = {"adapter.gguf", "adapter_config.json", "adapter_model.safetensors"};

// Removes an upload folder: the files in it (what this module writes, and
// the temporaries of a write cut short), then the folder.
static void remove_upload(const char *dir) {
    char path[1400];
    DIR *d = opendir(dir);
    struct dirent *f;
    while (d && (f = readdir(d)))
        if (strcmp(f->d_name, ".") && strcmp(f->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, f->d_name);
            unlink(path);
        }
    if (d) closedir(d);
    rmdir(dir);
}

int upload_sweep(const char *root, const char *host) {
    char prefix[128];
    snprintf(prefix, sizeof prefix, ".upload-%s-", host);
    size_t pl = strlen(prefix);
    DIR *d = opendir(root);
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, pl)) continue;
        char *end;
        long pid = strtol(e->d_name + pl, &end, 10);
        if (end == e->d_name + pl || *end != '-' || pid <= 0) continue;
        char *tail;
        strtol(end + 1, &tail, 10); // then the upload's number and nothing else (host "a-1" is not host "a")
        if (tail == end + 1 || *tail) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; // alive (or not ours to ask): its upload runs
        char dir[1100];
        snprintf(dir, sizeof dir, "%s/%s", root, e->d_name);
        remove_upload(dir);
        removed += !rm_is_dir(dir);
    }
    closedir(d);
    return removed;
}

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && !strcmp(s + n - t, tail);
}

// The uploaded files: gguf, or config and weights (PEFT). 0 or 400.
static int find_files(const rm_part *parts, int n, const rm_part **gguf, const rm_part **cfg, const rm_part **st) {
    *gguf = *cfg = *st = NULL;
    int files = 0;
    for (int i = 0; i < n; i++) {
        const rm_part *p = &parts[i];
        if (!p->has_filename) continue;
        const char *base = strrchr(p->filename, '/') ? strrchr(p->filename, '/') + 1 : p->filename;
        files++;
        if (ends_with(base, ".gguf") && !*gguf) *gguf = p;
        else if (!strcmp(base, "adapter_config.json") && !*cfg) *cfg = p;
        else if (!strcmp(base, "adapter_model.safetensors") && !*st) *st = p;
        else
            return rm_errorf(
                       RM_EINVAL,
                       "upload: unexpected file '%s' (one .gguf, or adapter_config.json and adapter_model.safetensors)",
                       base),
                   400;
    }
    if (!(*gguf && files == 1) && !(*cfg && *st && files == 2))
        return rm_errorf(RM_EINVAL,
                         "upload: send one .gguf file, or adapter_config.json and adapter_model.safetensors"),
               400;
    return 0;
}

// The sample inputs: a JSON list of 1..1000 strings, parsed into *json.
static int samples_of(const rm_part *p, rm_json **json, const char ***in) {
    if (!p)
        return rm_errorf(RM_EINVAL, "upload: the field \"samples\" (a JSON list of sample inputs) is required"), 400;
    if (rm_json_parse(p->data, p->len, "the field \"samples\"", json)) return 400;
    const rm_json *v = *json;
    if (v->type != RM_JSON_ARRAY || v->n == 0)
        return rm_errorf(RM_EINVAL, "upload: \"samples\" must be a JSON list of 1 to %d sample inputs",
                         SERVER_MAX_SAMPLES),
               400;
    if (v->n > SERVER_MAX_SAMPLES) return server_too_many_samples(v->n);
    if (!(*in = malloc(v->n * sizeof **in))) return rm_errorf(RM_ENOMEM, "out of memory"), 500;
    for (size_t i = 0; i < v->n; i++) {
        if (v->items[i].type != RM_JSON_STRING)
            return rm_errorf(RM_EINVAL, "upload: \"samples\" must hold strings"), 400;
        (*in)[i] = v->items[i].str;
    }
    return 0;
}

// A text field's value (NUL-terminated copy, at most cap-1 bytes), or "" when absent.
static int field(const rm_part *parts, int n, const char *name, char *out, size_t cap) {
    const rm_part *p = rm_multipart_find(parts, n, name);
    out[0] = 0;
    if (!p) return 0;
    if (p->len >= cap || memchr(p->data, 0, p->len))
        return rm_errorf(RM_EINVAL, "upload: the field \"%s\" is too long", name), 400;
    memcpy(out, p->data, p->len);
    out[p->len] = 0;
    return 0;
}

int upload_content(job *j, const char *body, size_t len, rm_sb *b) {
    rm_server *s = j->s;
    if (!s->pool) return rm_errorf(RM_EINVAL, "this server has no adapter pool (start it with --pool DIR)"), 400;
    rm_part parts[MAX_PARTS];
    int n = 0;
    if (rm_multipart_parse(j->ctype, body, len, parts, MAX_PARTS, &n)) return 400;
    char name[256], task[256], domain[256];
    const rm_part *gguf = NULL, *cfg = NULL, *st = NULL;
    int rc = field(parts, n, "name", name, sizeof name);
    if (!rc) rc = field(parts, n, "task", task, sizeof task);
    if (!rc) rc = field(parts, n, "domain", domain, sizeof domain);
    if (!rc && !name[0]) rc = (rm_errorf(RM_EINVAL, "upload: the field \"name\" is required"), 400);
    if (!rc) rc = find_files(parts, n, &gguf, &cfg, &st);
    rm_json *sj = NULL;
    const char **in = NULL;
    if (!rc) rc = samples_of(rm_multipart_find(parts, n, "samples"), &sj, &in);
    if (!rc) {
        pthread_mutex_lock(&s->pool_mu);
        int taken = rm_pool_id(s->pool, name) >= 0;
        pthread_mutex_unlock(&s->pool_mu);
        if (taken) rc = (rm_errorf(RM_EINVAL, "an adapter called '%s' is already in the pool", name), 400);
    }
    // the files into an upload folder of their own, then loaded and checked
    char root[900], tmp[1000], weights[1100], final[1000], host[64] = "";
    const char *store = rm_pool_weights_dir(s->pool); // shared by every server of a PostgreSQL pool
    if (!rc && !store)
        rc = (rm_errorf(RM_EINVAL, "upload: the pool has no folder for weights (add ?weights=DIR to the --pool URL)"),
              400);
    if (!rc && strlen(store) > 800) rc = (rm_errorf(RM_EINVAL, "upload: the pool's path is too long"), 500);
    gethostname(host, sizeof host - 1);
    snprintf(root, sizeof root, "%s", store ? store : "");
    snprintf(tmp, sizeof tmp, "%s/.upload-%s-%ld-%ld", root, host, (long)getpid(), j->id);
    if (!rc && (rm_mkdirs(root) || rm_mkdirs(tmp))) rc = (rm_errorf(RM_EIO, "upload: cannot make %s", tmp), 500);
    const rm_part *files[2] = {gguf ? gguf : cfg, gguf ? NULL : st};
    const char *fnames[2] = {gguf ? k_files[0] : k_files[1], k_files[2]};
    for (int f = 0; !rc && f < 2 && files[f]; f++) {
        snprintf(weights, sizeof weights, "%s/%s", tmp, fnames[f]);
        if (rm_write_file_atomic(weights, files[f]->data, files[f]->len)) rc = 500;
    }
    if (!gguf) snprintf(weights, sizeof weights, "%s", tmp);
    rm_lora *l = NULL;
    if (!rc && server_load_adapter(s, weights, &l))
        rc = (rm_error_prefix(RM_EMISMATCH, "adapter '%s' refused", name), 400);
    if (!rc) { // kept under the hash of its content
        rm_sha256 h;
        rm_sha256_init(&h);
        for (int f = 0; f < 2 && files[f]; f++) rm_sha256_update(&h, files[f]->data, files[f]->len);
        uint8_t d[32];
        char hex[65];
        rm_sha256_final(&h, d);
        rm_sha256_hex(d, hex);
        snprintf(final, sizeof final, "%s/%s", root, hex);
        if (rm_is_dir(final)) remove_upload(tmp); // the same content is there already
        else if (rename(tmp, final) && !rm_is_dir(final))
            rc = (rm_errorf(RM_EIO, "upload: cannot move %s to %s", tmp, final), 500);
        else if (rm_is_dir(tmp)) remove_upload(tmp); // another server stored the same content meanwhile
        if (!rc && rm_fsync_dir(root)) rc = 500;     // the folder is in place before the row naming it commits
        snprintf(weights, sizeof weights, "%s%s%s", final, gguf ? "/" : "", gguf ? k_files[0] : "");
    }
    if (rc) remove_upload(tmp);
    if (!rc) {
        rm_adapter_info info = {.name = name,
                                .weights = weights,
                                .task = task[0] ? task : NULL,
                                .domain = domain[0] ? domain : NULL,
                                .base_model = s->p.model};
        int64_t id = -1;
        pthread_mutex_lock(&s->pool_mu);
        rc = server_pool_status(rm_pool_add(s->pool, &info, in, NULL, (int)sj->n, &id));
        int size = rm_pool_size(s->pool);
        pthread_mutex_unlock(&s->pool_mu);
        if (!rc) {
            atomic_store(&s->pool_size, size);
            atomic_fetch_add(&s->n_uploads, 1);
            pthread_mutex_lock(&s->cache_mu); // loaded already: kept for its first request (while the budget allows)
            rm_lora *kept = NULL;
            if (!rm_lora_cache_put(&s->cache, name, weights, l, &kept))
                rm_lora_cache_release(&s->cache, kept); // takes l, or frees it
            l = NULL;
            atomic_store(&s->n_loaded, s->cache.n);
            pthread_mutex_unlock(&s->cache_mu);
            rm_sb_printf(b, "{\"id\": %lld, \"name\": ", (long long)id);
            rm_sb_json_str(b, name, strlen(name));
            rm_sb_puts(b, ", \"weights\": ");
            rm_sb_json_str(b, weights, strlen(weights));
            rm_sb_printf(b, ", \"pool_size\": %d}\n", size);
        }
    }
    rm_lora_free(l); // NULL once the cache has it
    free(in);
    rm_json_free(sj);
    return rc;
}
