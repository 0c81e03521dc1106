// merge.c — bakes adapters into a copy of the base GGUF (for export and as
// the dense reference of the tests): W' = W + sum_i w_i s_i B_i A_i, built row
// by row (dequantize, add, requantize) while the file is written.
#include "lora/adapter.h"
#include "base/err.h"
#include "format/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct merge_job {
    const rm_llama *m;
    int layer, which, n;
    rm_lora *const *a;
    const float *w;
    rm_type src_type, dst_type;
    const void *src;
} merge_job;

// dst = rows of W + dW, in dst_type. dW[o, :] = sum_i sum_j w_i s_i B_i[o, j] A_i[j, :]
static int merge_fill(void *ctx, void *dst, size_t nbytes) {
    const merge_job *J = ctx;
    const rm_tensor *W = &J->m->layers[J->layer].w[J->which];
    int64_t in = W->ne[0], out = W->ne[1];
    size_t srow = rm_row_size(J->src_type, in), drow = rm_row_size(J->dst_type, in);
    if (drow * (size_t)out != nbytes) return rm_errorf(RM_EINVAL, "merge: size mismatch for layer %d", J->layer);
    float *row = malloc((size_t)in * sizeof(float));
    if (!row) return rm_errorf(RM_ENOMEM, "out of memory");
    int mi = J->layer * RM_LIN_COUNT + J->which;
    for (int64_t o = 0; o < out; o++) {
        rm_dequantize_row(J->src_type, (const uint8_t *)J->src + (size_t)o * srow, row, in);
        for (int i = 0; i < J->n; i++) {
            if (J->layer >= J->a[i]->n_layer) continue;
            const rm_lora_mod *md = &J->a[i]->mods[mi];
            for (int j = 0; j < md->r; j++)
                rm_axpy_f32(row, J->w[i] * md->scale * md->Bt[(size_t)j * out + o], md->A + (size_t)j * in, in);
        }
        rm_quantize_row(J->dst_type, row, (uint8_t *)dst + (size_t)o * drow, in);
    }
    free(row);
    return RM_OK;
}

// A matrix the model holds repacked (rm_repack_for_kernels) that no adapter
// touches: its rows back in the file's layout, byte for byte.
static int unpack_fill(void *ctx, void *dst, size_t nbytes) {
    const rm_tensor *W = ctx;
    size_t row = rm_row_size(W->type, W->ne[0]);
    if (row * (size_t)W->ne[1] != nbytes) return rm_errorf(RM_EINVAL, "merge: size mismatch for a repacked matrix");
    for (int64_t o = 0; o < W->ne[1]; o++)
        rm_r16_unpack_row(W->type, (const uint8_t *)W->data + (size_t)o * row, (uint8_t *)dst + (size_t)o * row,
                          W->ne[0]);
    return RM_OK;
}

int rm_lora_merge(const rm_llama *m, int n, rm_lora *const *a, const float *w, int type, const char *out_path) {
    for (int i = 0; i < n; i++)
        if (a[i]->base != m) return rm_errorf(RM_EINVAL, "merge: %s is not bound to %s", a[i]->path, m->path);
    if (type >= 0 && !rm_type_supported(type)) return rm_errorf(RM_EINVAL, "merge: unsupported weight type %d", type);
    const gguf_file *g = &m->gguf;
    int rc = RM_OK;
    gguf_writer *gw = gguf_writer_new();
    merge_job *jobs = calloc((size_t)m->hp.n_layer * RM_LIN_COUNT, sizeof *jobs);
    if (!gw || !jobs) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
        goto done;
    }
    for (uint64_t k = 0; k < g->n_kv && !rc; k++) {
        char key[256];
        gguf_str_copy(g->kv[k].key, key, sizeof key);
        rc = gguf_set_value(gw, key, &g->kv[k].val);
    }
    for (uint64_t t = 0; t < g->n_tensors && !rc; t++) {
        const gguf_tensor_info *ti = &g->tensors[t];
        char name[160];
        gguf_str_copy(ti->name, name, sizeof name);
        int l = -1, wh = -1;
        for (int li = 0; li < m->hp.n_layer && wh < 0; li++)
            for (int k = 0; k < RM_LIN_COUNT; k++)
                if (m->layers[li].w[k].data == ti->data) {
                    l = li;
                    wh = k;
                    break;
                }
        int touched = 0;
        for (int i = 0; wh >= 0 && i < n; i++)
            if (l < a[i]->n_layer && a[i]->mods[l * RM_LIN_COUNT + wh].r) touched = 1;
        const rm_tensor *held = wh >= 0 ? &m->layers[l].w[wh] : ti->data == m->output.data ? &m->output : NULL;
        if (!touched) {
            if (held && rm_type_r16_base(held->type) >= 0)
                rc = gguf_add_tensor_fill(gw, name, (rm_type)ti->type, ti->n_dims, ti->ne, unpack_fill, (void *)held);
            else rc = gguf_add_tensor(gw, name, (rm_type)ti->type, ti->n_dims, ti->ne, ti->data);
            continue;
        }
        merge_job *J = &jobs[l * RM_LIN_COUNT + wh];
        *J = (merge_job){m, l, wh, n, a, w, held->type, type >= 0 ? (rm_type)type : (rm_type)ti->type, ti->data};
        if (rm_row_size(J->dst_type, ti->ne[0]) == 0) {
            rc = rm_errorf(RM_EINVAL, "merge: %s: rows of %lld do not fit type %s", name, (long long)ti->ne[0],
                           rm_type_name(J->dst_type));
            break;
        }
        rc = gguf_add_tensor_fill(gw, name, J->dst_type, ti->n_dims, ti->ne, merge_fill, J);
    }
    if (!rc) rc = gguf_write(gw, out_path);
done:
    free(jobs);
    gguf_writer_free(gw);
    return rc;
}
