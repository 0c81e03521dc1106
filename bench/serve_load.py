#!/usr/bin/env python3
# serve_load.py — a load figure for `ramole serve`: C concurrent clients,
# each sending streamed completions one after another for S seconds; prints
# errors, time to first token (p50 / p99), generated tokens per second and
# the server's RSS at the start and the end. With --uploads N, N adapters
# (GGUF files from --upload-files, e.g. bench/make_adapters.py's) are uploaded
# (multipart POST /v1/adapters, one after another, spread over the middle
# 80% of the run) while the clients run; needs --pool.
#
#   python3 bench/serve_load.py --bin build/ramole --model tl.gguf [--clients 32] [--seconds 120]
#                               [--max-tokens 32] [--slots 32] [-t 2] [--pool DIR]
#                               [--uploads 50 --upload-files DIR]
#
# The server is started here (--port 0) and stopped with SIGTERM at the end.
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time


def read_to_close(s):
    """Everything the peer sends on socket s until it closes; closes s."""
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    return buf

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def start_server(args):
    """`ramole serve` started with args (which hold --port 0): (process, port); its stderr drained."""
    srv = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    for line in srv.stderr:
        m = re.search(r"listening on http://[^ ]*:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
            return srv, int(m.group(1))
    sys.exit("the server did not start")


def one_request(port, body, timeout):
    """One streamed completion; returns (ttft seconds, tokens) or raises."""
    data = json.dumps(body).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: b\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(head + data)
    buf, ttft, tokens = b"", None, 0
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
        if ttft is None and b'"text": "' in buf.split(b"\r\n\r\n", 1)[-1]:
            ttft = time.monotonic() - t0
    s.close()
    if not buf.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(buf[:200])
    if b"data: [DONE]" not in buf:
        raise RuntimeError("stream cut: " + buf[-200:].decode(errors="replace"))
    m = re.search(rb'"completion_tokens": (\d+)', buf)
    tokens = int(m.group(1)) if m else 0
    return (ttft if ttft is not None else time.monotonic() - t0), tokens


def upload(port, name, path):
    """One multipart upload of the GGUF file at path as adapter name; raises unless 201."""
    with open(path, "rb") as f:
        data = f.read()
    parts = [(b'Content-Disposition: form-data; name="name"', name.encode()),
             (b'Content-Disposition: form-data; name="samples"', json.dumps([f"samples of {name}", "another sample"]).encode()),
             (b'Content-Disposition: form-data; name="file"; filename="adapter.gguf"\r\nContent-Type: application/octet-stream', data)]
    body = b"".join(b"--XyZzy42\r\n" + h + b"\r\n\r\n" + v + b"\r\n" for h, v in parts) + b"--XyZzy42--\r\n"
    head = (f"POST /v1/adapters HTTP/1.1\r\nHost: b\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=XyZzy42\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=300)
    s.sendall(head + body)
    buf = read_to_close(s)
    if not buf.startswith(b"HTTP/1.1 201"):
        raise RuntimeError(buf[:300])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/ramole")
    ap.add_argument("--model", required=True)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--pool")
    ap.add_argument("--uploads", type=int, default=0)
    ap.add_argument("--upload-files")
    a = ap.parse_args()
    if a.uploads and not (a.pool and a.upload_files):
        sys.exit("--uploads needs --pool and --upload-files")
    args = [a.bin, "serve", "-m", a.model, "--port", "0", "-t", str(a.t), "--slots", str(a.slots), "--log-format", "none",
            "--max-connections", str(max(64, 2 * a.clients))]
    if a.pool:
        args += ["--pool", a.pool]
    srv, port = start_server(args)
    rss_start = rss_kib(srv.pid)
    body = {"prompt": "Once upon a time, in a small town by the sea,", "max_tokens": a.max_tokens, "temperature": 0.8,
            "stream": True, "stream_options": {"include_usage": True}}
    if a.pool:
        body["model"] = "ramole-auto"
    ttfts, tokens, errors, lock = [], [0], [], threading.Lock()
    t_end = time.monotonic() + a.seconds

    def client(i):
        n = 0
        while time.monotonic() < t_end:
            try:
                tt, tk = one_request(port, dict(body, seed=1000 * i + n), 120)
                with lock:
                    ttfts.append(tt)
                    tokens[0] += tk
            except Exception as e:  # counted, not fatal
                with lock:
                    errors.append(str(e)[:200])
            n += 1

    up_done, up_errors, up_times = [0], [], []

    def uploader():
        files = sorted(f for f in os.listdir(a.upload_files) if f.endswith(".gguf"))[:a.uploads]
        gap = 0.8 * a.seconds / max(1, len(files))
        time.sleep(0.1 * a.seconds)
        for k, f in enumerate(files):
            t = time.monotonic()
            try:
                upload(port, f"up{os.getpid()}-{k}", os.path.join(a.upload_files, f))
                up_done[0] += 1
            except Exception as e:
                up_errors.append(str(e)[:200])
            up_times.append(time.monotonic() - t)
            time.sleep(max(0.0, gap - (time.monotonic() - t)))

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    if a.uploads:
        threads.append(threading.Thread(target=uploader))
    for t in threads:
        t.start()
    samples = []  # RSS every tenth of the run: flat, or growing?
    while any(t.is_alive() for t in threads):
        time.sleep(a.seconds / 10)
        samples.append(rss_kib(srv.pid))
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    rss_end = rss_kib(srv.pid)
    srv.send_signal(signal.SIGTERM)
    srv.wait(timeout=60)
    q = statistics.quantiles(ttfts, n=100) if len(ttfts) >= 2 else [float("nan")] * 99
    print(f"clients {a.clients}, {wall:.0f} s, requests {len(ttfts)}, errors {len(errors)}")
    print(f"time to first token: p50 {1000 * q[49]:.0f} ms, p99 {1000 * q[98]:.0f} ms")
    print(f"generated tokens/s: {tokens[0] / wall:.1f}")
    print(f"server RSS: start {rss_start / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB; every tenth of the run: "
          + " ".join(f"{x / 1024:.1f}" for x in samples))
    if a.uploads:
        print(f"uploads: {up_done[0]} of {a.uploads} accepted, errors {len(up_errors)}, time per upload max "
              f"{1000 * max(up_times, default=0):.0f} ms")
    for e in (errors + up_errors)[:5]:
        print("error:", e)
    sys.exit(1 if errors or up_errors else 0)


if __name__ == "__main__":
    main()
