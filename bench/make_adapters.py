#!/usr/bin/env python3
# make_adapters.py — N distinct random GGUF LoRA adapters (q and v of every
# layer, f32) for a llama model's shape, for the server's load figures
# (docs/reliability.md). Each file's numbers are one shared block of small
# random values rotated by a different offset, so files differ at no cost
# per value; the scale is far from what ramole refuses as corrupt.
#
#   python3 bench/make_adapters.py --model tiny.gguf --count 10000 --rank 8 --out DIR
# writes DIR/a00000.gguf ... and prints the size of one.
import argparse
import os
import random
import struct
import subprocess


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv_str(k, v):
    return gstr(k) + struct.pack("<I", 8) + gstr(v)


def kv_f32(k, v):
    return gstr(k) + struct.pack("<If", 6, v)


def shape_of(model, binary):
    """(n_embd, kv width, layers) from `ramole info`."""
    out = subprocess.run([binary, "info", model], capture_output=True, text=True, check=True).stdout
    hp = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            hp[parts[0]] = int(parts[1])
    n_embd, heads = hp["embedding_length"], hp["attention.head_count"]
    kv = hp.get("attention.head_count_kv", heads)
    return n_embd, n_embd // heads * kv, hp["block_count"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--bin", default="build/ramole")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--out", required=True)
    ap.add_argument("--first", type=int, default=0, help="number of the first file")
    a = ap.parse_args()
    n_embd, n_kv, n_layer = shape_of(a.model, a.bin)
    r = a.rank
    tensors = []  # (name, dims in GGUF order, number of floats)
    for i in range(n_layer):
        for lin, out in (("attn_q", n_embd), ("attn_v", n_kv)):
            tensors.append((f"blk.{i}.{lin}.weight.lora_a", (n_embd, r), n_embd * r))
            tensors.append((f"blk.{i}.{lin}.weight.lora_b", (r, out), r * out))
    head = b"".join([kv_str("general.architecture", "llama"), kv_str("general.type", "adapter"), kv_str("adapter.type", "lora"),
                     kv_f32("adapter.lora.alpha", float(r))])
    infos, off = b"", 0
    for name, dims, n in tensors:
        infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", 0, off)
        off += (n * 4 + 31) // 32 * 32
    meta = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 4) + head + infos
    meta += b"\0" * ((32 - len(meta) % 32) % 32)
    total = sum(n for _, _, n in tensors)
    rng = random.Random(1)
    block = struct.pack(f"<{total}f", *(rng.gauss(0, 0.02) for _ in range(total)))
    os.makedirs(a.out, exist_ok=True)
    for k in range(a.first, a.first + a.count):
        shift = 4 * ((k * 7919) % total)
        data = block[shift:] + block[:shift]
        body, at = [], 0
        for _, _, n in tensors:
            body.append(data[at:at + 4 * n] + b"\0" * ((32 - 4 * n % 32) % 32))
            at += 4 * n
        with open(os.path.join(a.out, f"a{k:05d}.gguf"), "wb") as f:
            f.write(meta + b"".join(body))
    print(f"{a.count} adapters of {len(meta) + off} bytes (rank {r}, q and v of {n_layer} layers, width {n_embd}, kv {n_kv}) in {a.out}")


if __name__ == "__main__":
    main()
