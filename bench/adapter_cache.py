#!/usr/bin/env python3
# adapter_cache.py — `ramole serve` with a large pool and a small adapter
# cache (docs/reliability.md): N adapters (bench/make_adapters.py) uploaded by
# path into a fresh pool, then R completions, each naming a random adapter as
# its model, from C clients. Prints the server's RSS (at start, after the
# uploads, the most seen while requests ran) beside the cache's budget, the
# cache's hits, misses, loads and evictions over the requests, the hit rate
# and the load time per miss.
#
#   python3 bench/adapter_cache.py --bin build/ramole --model tiny.gguf --work DIR [--adapters 10000]
#                                  [--cache-mb 256] [--requests 3000] [--clients 8]
import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from serve_load import read_to_close, rss_kib, start_server


def http(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    s = socket.create_connection(("127.0.0.1", port), timeout=300)
    s.sendall((f"{method} {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(data)}\r\n\r\n").encode() + data)
    buf = read_to_close(s)
    m = re.match(rb"HTTP/1\.1 (\d+)", buf)
    return (int(m.group(1)) if m else 0), buf.split(b"\r\n\r\n", 1)[-1]


def metrics(port):
    _, body = http(port, "GET", "/metrics")
    return {m.group(1).decode(): float(m.group(2)) for m in re.finditer(rb"\nramole_(\w+) (\S+)", body)}


def parallel(n_threads, items, fn):
    """fn(item) over items from n_threads threads; the failures' messages."""
    lock, it, errors = threading.Lock(), iter(items), []

    def run():
        while True:
            with lock:
                x = next(it, None)
            if x is None:
                return
            err = fn(x)
            if err:
                with lock:
                    errors.append(err)

    ts = [threading.Thread(target=run) for _ in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/ramole")
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True, help="a folder for the adapters and the pool")
    ap.add_argument("--adapters", type=int, default=10000)
    ap.add_argument("--cache-mb", type=float, default=256)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--embedder", default="shape", help="the pool's embedder (pool init --embedder; shape: small keys)")
    a = ap.parse_args()
    files, pool = os.path.join(a.work, "adapters"), os.path.join(a.work, "pool")
    have = len([f for f in os.listdir(files) if f.endswith(".gguf")]) if os.path.isdir(files) else 0
    if have < a.adapters:
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "make_adapters.py"), "--model", a.model, "--bin", a.bin,
                        "--count", str(a.adapters - have), "--first", str(have), "--out", files], check=True)
    subprocess.run(["rm", "-rf", pool], check=True)
    corpus = os.path.join(a.work, "corpus.jsonl")
    with open(corpus, "w") as f:
        for k in range(200):
            f.write(json.dumps(f"task {k} about topic{k % 13} and subject{k % 29}") + "\n")
    subprocess.run([a.bin, "pool", "init", "--pool", pool, "--corpus", corpus, "--embedder", a.embedder], check=True,
                   stderr=subprocess.DEVNULL)
    srv, port = start_server([a.bin, "serve", "-m", a.model, "--pool", pool, "--adapter-dir", files, "--port", "0", "-t", "1",
                              "--slots", "8", "--log-format", "none", "--adapter-cache-mb", str(a.cache_mb)])
    warm = parallel(a.clients, range(2 * a.clients), lambda k: None if http(port, "POST", "/v1/completions",
                    {"prompt": "task about topic", "max_tokens": 4})[0] == 200 else "warm-up failed")
    rss_start = rss_kib(srv.pid)  # the model, the engine's buffers and the threads' arenas touched, no adapter loaded
    if warm:
        sys.exit(warm[0])

    def upload(k):
        st, body = http(port, "POST", "/v1/adapters", {"name": f"a{k:05d}", "weights": os.path.join(files, f"a{k:05d}.gguf"),
                                                       "samples": [f"task {k} about topic{k % 13} and subject{k % 29}"]})
        return None if st == 201 else f"upload {k}: {st} {body[:200]!r}"

    t0 = time.monotonic()
    errors = parallel(4, range(a.adapters), upload)
    t_up = time.monotonic() - t0
    rss_up = rss_kib(srv.pid)
    before = metrics(port)
    rng = random.Random(7)
    picks = [rng.randrange(a.adapters) for _ in range(a.requests)]
    rss_max, done = [rss_up], [False]

    def sampler():
        while not done[0]:
            rss_max[0] = max(rss_max[0], rss_kib(srv.pid))
            time.sleep(0.2)

    def ask(k):
        st, body = http(port, "POST", "/v1/completions", {"model": f"a{k:05d}", "prompt": "task about topic", "max_tokens": 4,
                                                          "temperature": 0})
        return None if st == 200 else f"request a{k:05d}: {st} {body[:200]!r}"

    st_thread = threading.Thread(target=sampler)
    st_thread.start()
    t0 = time.monotonic()
    errors += parallel(a.clients, picks, ask)
    t_req = time.monotonic() - t0
    done[0] = True
    st_thread.join()
    after = metrics(port)
    srv.send_signal(signal.SIGTERM)
    srv.wait(timeout=120)
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    budget = after.get("adapter_cache_budget_bytes", 0) / 2**20
    hits, misses, loads = d.get("adapter_cache_hits_total", 0), d.get("adapter_cache_misses_total", 0), d.get("adapter_cache_loads_total", 0)
    print(f"pool: {a.adapters} adapters uploaded by path in {t_up:.0f} s; cache budget {budget:.0f} MiB; "
          f"{a.requests} requests over random adapters from {a.clients} clients in {t_req:.0f} s, errors {len(errors)}")
    print(f"server RSS: at start (after a warm-up without adapters) {rss_start / 1024:.1f} MiB, after the uploads {rss_up / 1024:.1f} MiB, "
          f"most while requests ran {rss_max[0] / 1024:.1f} MiB (start + budget = {rss_start / 1024 + budget:.1f} MiB)")
    print(f"cache over the requests: hits {hits:.0f}, misses {misses:.0f}, loads {loads:.0f}, evictions "
          f"{d.get('adapter_cache_evictions_total', 0):.0f}; hit rate {hits / max(1, hits + misses):.3f}; load time per miss "
          f"{1000 * d.get('adapter_load_seconds_total', 0) / max(1, loads):.2f} ms; loaded at the end {after.get('adapters_loaded', 0):.0f} "
          f"({after.get('adapter_cache_bytes', 0) / 2**20:.1f} MiB)")
    for e in errors[:5]:
        print("error:", e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
