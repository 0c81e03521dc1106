#!/usr/bin/python3
"""bert_ref.py - the reference for ramole's BERT embedder (tests/test_embed_tf.c).

Builds a small random-weight BERT (post-LayerNorm, erf GELU, bidirectional
attention) with a made-up WordPiece vocabulary, writes it as a GGUF file in
llama.cpp's "bert" conventions (with a GGUF writer of its own below), runs a
few token-id sequences through a forward pass written here with plain torch
ops in float64, and writes a golden file with every sequence's last hidden
states and its mean- and CLS-pooled vectors. Run once, from the repo root:

    /usr/bin/python3 tests/ref/bert_ref.py

It writes tests/ref/bert_tiny.gguf and tests/ref/bert_tiny.golden. The matrix
weights are stored as f16 (the forward here uses the f16-rounded values), the
embeddings, norms and biases as f32.

Golden layout (little-endian): b"RMBERTG1", u32 n_seq, u32 dim, then per
sequence u32 len, i32 ids[len], f32 hidden[len][dim], f32 mean[dim],
f32 cls[dim] (pooled, not normalised).
"""
import math
import os
import struct

import torch

VOCAB_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Word-initial pieces carry U+2581 (the llama.cpp GGUF convention for
# WordPiece); continuation pieces ("##s" in Hugging Face files) are bare.
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "to", "house", "big", "small", "red",
         "blue", "is", "was", "and", "of", "in", "it", "play", "jump", "walk", "tree", "sun", "moon",
         "star", "fish", "bird", "what", "why", "how", "who", "task", "answer", "question", "sentence",
         "translate", "review", "good", "bad"]
SUFFIXES = ["ed", "ing", "er", "ly", "est"]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
PUNCT = [".", ",", "?", "!", ":"]

DIM, N_LAYER, N_HEAD, N_FF, N_CTX, EPS = 32, 2, 4, 64, 32, 1e-12


def vocab():
    toks = list(VOCAB_SPECIAL)
    toks += ["\u2581" + w for w in WORDS]
    toks += SUFFIXES
    toks += ["\u2581" + c for c in LETTERS] + LETTERS
    toks += ["\u2581" + p for p in PUNCT]
    return toks


# ---------------------------------------------------------------- weights

def make_weights(n_vocab):
    g = torch.Generator().manual_seed(20261129)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    def f16(t):  # the value the GGUF file holds
        return t.to(torch.float16).to(torch.float64)

    w = {
        "token_embd.weight": rnd(n_vocab, DIM, scale=0.5),
        "position_embd.weight": rnd(N_CTX, DIM, scale=0.2),
        "token_types.weight": rnd(2, DIM, scale=0.2),
        "token_embd_norm.weight": 1.0 + rnd(DIM, scale=0.1),
        "token_embd_norm.bias": rnd(DIM, scale=0.1),
    }
    for l in range(N_LAYER):
        p = "blk.%d." % l
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w[p + name + ".weight"] = f16(rnd(DIM, DIM, scale=1.0 / math.sqrt(DIM)))
            w[p + name + ".bias"] = rnd(DIM, scale=0.1)
        w[p + "attn_output_norm.weight"] = 1.0 + rnd(DIM, scale=0.1)
        w[p + "attn_output_norm.bias"] = rnd(DIM, scale=0.1)
        w[p + "ffn_up.weight"] = f16(rnd(N_FF, DIM, scale=1.0 / math.sqrt(DIM)))
        w[p + "ffn_up.bias"] = rnd(N_FF, scale=0.1)
        w[p + "ffn_down.weight"] = f16(rnd(DIM, N_FF, scale=1.0 / math.sqrt(N_FF)))
        w[p + "ffn_down.bias"] = rnd(DIM, scale=0.1)
        w[p + "layer_output_norm.weight"] = 1.0 + rnd(DIM, scale=0.1)
        w[p + "layer_output_norm.bias"] = rnd(DIM, scale=0.1)
    return w


# ---------------------------------------------------------------- forward

def forward(w, ids):
    """Last hidden states [T, DIM] of one sequence (float64)."""
    T = len(ids)
    F = torch.nn.functional
    x = w["token_embd.weight"][torch.tensor(ids)] + w["position_embd.weight"][:T] + w["token_types.weight"][0]
    x = F.layer_norm(x, (DIM,), w["token_embd_norm.weight"], w["token_embd_norm.bias"], EPS)
    hd = DIM // N_HEAD
    for l in range(N_LAYER):
        p = "blk.%d." % l

        def lin(name, inp):
            return inp @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q = lin("attn_q", x).view(T, N_HEAD, hd).transpose(0, 1)  # [H, T, hd]
        k = lin("attn_k", x).view(T, N_HEAD, hd).transpose(0, 1)
        v = lin("attn_v", x).view(T, N_HEAD, hd).transpose(0, 1)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1)  # no mask: bidirectional
        o = (att @ v).transpose(0, 1).reshape(T, DIM)
        x = F.layer_norm(x + lin("attn_output", o), (DIM,), w[p + "attn_output_norm.weight"],
                         w[p + "attn_output_norm.bias"], EPS)
        h = F.gelu(lin("ffn_up", x))  # the exact (erf) GELU
        x = F.layer_norm(x + lin("ffn_down", h), (DIM,), w[p + "layer_output_norm.weight"],
                         w[p + "layer_output_norm.bias"], EPS)
    return x


# ---------------------------------------------------------------- GGUF writer

GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL, GGUF_STR, GGUF_ARR = 4, 5, 6, 7, 8, 9
GGML_F32, GGML_F16 = 0, 1
ALIGN = 32


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def gguf_value(kind, v):
    if kind == GGUF_U32:
        return struct.pack("<I", v)
    if kind == GGUF_I32:
        return struct.pack("<i", v)
    if kind == GGUF_F32:
        return struct.pack("<f", v)
    if kind == GGUF_BOOL:
        return struct.pack("<B", 1 if v else 0)
    if kind == GGUF_STR:
        return gguf_string(v)
    elem, items = v
    return struct.pack("<IQ", elem, len(items)) + b"".join(gguf_value(elem, x) for x in items)


def write_gguf(path, kvs, tensors):
    """kvs: [(key, kind, value)]; tensors: [(name, torch tensor, ggml type)]."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
    for key, kind, val in kvs:
        out += gguf_string(key) + struct.pack("<I", kind) + gguf_value(kind, val)
    blobs, offset = [], 0
    for name, t, ty in tensors:
        ne = list(reversed(t.shape))  # GGUF lists the innermost dimension first
        out += gguf_string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", ty, offset)
        data = t.to(torch.float16 if ty == GGML_F16 else torch.float32).contiguous().numpy().tobytes()
        pad = (-len(data)) % ALIGN
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    out += b"\0" * ((-len(out)) % ALIGN)
    for b in blobs:
        out += b
    with open(path, "wb") as f:
        f.write(out)


# ---------------------------------------------------------------- main

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    toks = vocab()
    ids_of = {t: i for i, t in enumerate(toks)}
    w = make_weights(len(toks))
    kvs = [
        ("general.architecture", GGUF_STR, "bert"),
        ("general.name", GGUF_STR, "bert-tiny-random"),
        ("bert.context_length", GGUF_U32, N_CTX),
        ("bert.embedding_length", GGUF_U32, DIM),
        ("bert.feed_forward_length", GGUF_U32, N_FF),
        ("bert.block_count", GGUF_U32, N_LAYER),
        ("bert.attention.head_count", GGUF_U32, N_HEAD),
        ("bert.attention.layer_norm_epsilon", GGUF_F32, EPS),
        ("bert.attention.causal", GGUF_BOOL, False),
        ("bert.pooling_type", GGUF_U32, 1),
        ("tokenizer.ggml.model", GGUF_STR, "bert"),
        ("tokenizer.ggml.tokens", GGUF_ARR, (GGUF_STR, toks)),
        ("tokenizer.ggml.token_type", GGUF_ARR, (GGUF_I32, [3 if t in VOCAB_SPECIAL else 1 for t in toks])),
        ("tokenizer.ggml.padding_token_id", GGUF_U32, 0),
        ("tokenizer.ggml.unknown_token_id", GGUF_U32, 1),
        ("tokenizer.ggml.cls_token_id", GGUF_U32, 2),
        ("tokenizer.ggml.seperator_token_id", GGUF_U32, 3),
        ("tokenizer.ggml.mask_token_id", GGUF_U32, 4),
    ]
    tensors = [(n, t, GGML_F16 if t.dim() == 2 and n.startswith("blk.") else GGML_F32) for n, t in w.items()]
    write_gguf(os.path.join(here, "bert_tiny.gguf"), kvs, tensors)

    # "the cats sat on the mat." as WordPiece would split it (the C test also
    # checks that the tokenizer gives these ids); then arbitrary id runs,
    # one of them as long as the model's positions.
    words = ["[CLS]", "\u2581the", "\u2581cat", "s", "\u2581sat", "\u2581on", "\u2581the", "\u2581mat", "\u2581.",
             "[SEP]"]
    g = torch.Generator().manual_seed(7)
    seqs = [[ids_of[t] for t in words], [2, 3], [2] + torch.randint(5, len(toks), (11,), generator=g).tolist() + [3],
            [2] + torch.randint(5, len(toks), (N_CTX - 2,), generator=g).tolist() + [3]]
    out = bytearray(b"RMBERTG1" + struct.pack("<II", len(seqs), DIM))
    for ids in seqs:
        h = forward(w, ids)
        out += struct.pack("<I", len(ids)) + struct.pack("<%di" % len(ids), *ids)
        for row in (h, h.mean(dim=0, keepdim=True), h[:1]):
            out += row.to(torch.float32).numpy().tobytes()
    with open(os.path.join(here, "bert_tiny.golden"), "wb") as f:
        f.write(out)


if __name__ == "__main__":
    main()
