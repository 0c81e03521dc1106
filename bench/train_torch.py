#!/usr/bin/python3
"""PyTorch reference for `ramole-bench train`: the same Llama-architecture
model (tied embeddings, RMSNorm, RoPE on (2i, 2i+1) pairs, causal GQA
attention, SwiGLU), float32, AdamW, the same batch; prints tokens/s.

  OMP_NUM_THREADS=2 /usr/bin/python3 bench/train_torch.py --threads 2 \
      --embd 384 --layers 6 --heads 6 --kv-heads 6 --ff 1024 --vocab 258 --batch 8 --seq 256 --steps 6
"""
import argparse, math, time
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def rope(x, cos, sin):  # x [B, H, T, hd], pairs (2i, 2i+1)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, d, h, hk, ff):
        super().__init__()
        self.h, self.hk, self.hd = h, hk, d // h
        self.attn_norm, self.ffn_norm = RMSNorm(d), RMSNorm(d)
        self.q = nn.Linear(d, h * self.hd, bias=False)
        self.k = nn.Linear(d, hk * self.hd, bias=False)
        self.v = nn.Linear(d, hk * self.hd, bias=False)
        self.o = nn.Linear(h * self.hd, d, bias=False)
        self.gate = nn.Linear(d, ff, bias=False)
        self.up = nn.Linear(d, ff, bias=False)
        self.down = nn.Linear(ff, d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        a = self.attn_norm(x)
        q = self.q(a).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.k(a).view(B, T, self.hk, self.hd).transpose(1, 2)
        v = self.v(a).view(B, T, self.hk, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if self.hk != self.h:
            k = k.repeat_interleave(self.h // self.hk, dim=1)
            v = v.repeat_interleave(self.h // self.hk, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        p = F.softmax(s.masked_fill(mask, float("-inf")), dim=-1)
        x = x + self.o((p @ v).transpose(1, 2).reshape(B, T, -1))
        f = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(f)) * self.up(f))


class Model(nn.Module):
    def __init__(self, V, d, L, h, hk, ff, T):
        super().__init__()
        self.emb = nn.Embedding(V, d)
        self.blocks = nn.ModuleList([Block(d, h, hk, ff) for _ in range(L)])
        self.norm = RMSNorm(d)
        hd = d // h
        freq = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.arange(T).float()[:, None] * freq[None, :]
        self.register_buffer("cos", ang.cos())
        self.register_buffer("sin", ang.sin())
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1))

    def forward(self, idx):
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x, self.cos, self.sin, self.mask)
        return self.norm(x) @ self.emb.weight.t()  # tied classifier


def main():
    ap = argparse.ArgumentParser()
    for name, default in [("threads", 2), ("embd", 384), ("layers", 6), ("heads", 6), ("kv-heads", 6), ("ff", 1024),
                          ("vocab", 258), ("batch", 8), ("seq", 256), ("steps", 6), ("warmup", 2)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    m = Model(a.vocab, a.embd, a.layers, a.heads, a.kv_heads, a.ff, a.seq)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1)
    n_params = sum(p.numel() for p in m.parameters())
    x = torch.randint(0, a.vocab, (a.batch, a.seq + 1))
    times = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        logits = m(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, a.vocab), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    print(f"pytorch {torch.__version__}: {n_params} params, {a.threads} threads, batch {a.batch}x{a.seq}: "
          f"{a.batch * a.seq / med:.0f} tokens/s (median step {med * 1000:.0f} ms, loss {loss.item():.3f})")


if __name__ == "__main__":
    main()
