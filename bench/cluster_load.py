#!/usr/bin/env python3
# cluster_load.py — figures for replicas sharing one pool (bench/cluster.sh
# runs it against scripts/cluster.sh's deployment).
#
#   cluster_load.py visible --a PORT --b PORT --demo DIR [--n 40]
#       n rounds: upload a demo adapter through replica A, poll replica B's
#       retrieval until it is chosen; delete it through B, poll A until it no
#       longer is. Prints p50 / p99 of both times (from the answer of the
#       upload or delete to the answer of the first poll that saw it).
#   cluster_load.py load --port PORT [--clients 8] [--seconds 20] [--max-tokens 16]
#       C clients sending retrieving completions (RAMoLE: retrieve 3,
#       mixture) one after another for S seconds; prints requests/s and errors.
import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import uuid


def request(conn, method, path, body=None, ctype="application/json"):
    headers = {"Content-Type": ctype} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def retrieved(conn, query, name):
    body = json.dumps({"prompt": query, "retrieve": 3, "max_tokens": 1, "temperature": 0})
    status, data = request(conn, "POST", "/v1/completions", body)
    return status == 200 and name in [a.get("name") for a in json.loads(data).get("adapters", [])]


def multipart(fields, files):
    b = "rAmOlEbEnCh" + uuid.uuid4().hex
    out = bytearray()
    for k, v in fields.items():
        out += f"--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
    for k, (fname, data) in files.items():
        out += f"--{b}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{fname}\"\r\n\r\n".encode() + data + b"\r\n"
    out += f"--{b}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={b}"


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def wait_for(conn, query, name, want, limit=10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if retrieved(conn, query, name) == want:
            return time.monotonic()
    return None


def change_then_wait(via, other, req, ok, query, name, want):
    """Sends req through via (expecting status ok), then polls other's retrieval
    until it does (want) or does not choose name: the milliseconds between."""
    method, path, body, ctype = req
    status, data = request(via, method, path, body, ctype) if body is not None else request(via, method, path)
    t0 = time.monotonic()
    if status != ok:
        sys.exit(f"{method} {path}: HTTP {status} {data[:200]!r}")
    t1 = wait_for(other, query, name, want)
    if t1 is None:
        sys.exit(f"{name}: still {'not ' if want else ''}retrieved 10 s after {method} {path}")
    return (t1 - t0) * 1e3


def visible(a):
    task = "sentiment_film"
    inputs = [json.loads(line)["inputs"] for line in open(f"{a.demo}/samples/{task}.jsonl")]
    query = inputs[-1]
    files = {"config": ("adapter_config.json", open(f"{a.demo}/adapters/{task}/adapter_config.json", "rb").read()),
             "weights": ("adapter_model.safetensors", open(f"{a.demo}/adapters/{task}/adapter_model.safetensors", "rb").read())}
    ca, cb = http.client.HTTPConnection("127.0.0.1", a.a), http.client.HTTPConnection("127.0.0.1", a.b)
    add_ms, del_ms, poll_ms = [], [], []
    for i in range(a.n):
        name = f"vis-{i}"
        body, ctype = multipart({"name": name, "task": task, "samples": json.dumps(inputs[:50])}, files)
        add_ms.append(change_then_wait(ca, cb, ("POST", "/v1/adapters", body, ctype), 201, query, name, True))
        t0 = time.monotonic()
        retrieved(cb, query, name)
        poll_ms.append((time.monotonic() - t0) * 1e3)
        del_ms.append(change_then_wait(cb, ca, ("DELETE", f"/v1/adapters/{name}", None, None), 200, query, name, False))
    print(f"rounds {a.n}; one poll (a retrieving completion, 1 token) takes {statistics.median(poll_ms):.0f} ms (median)")
    print(f"upload through A -> retrieved through B: p50 {pct(add_ms, 50):.0f} ms, p99 {pct(add_ms, 99):.0f} ms, max {max(add_ms):.0f} ms")
    print(f"delete through B -> gone from A:          p50 {pct(del_ms, 50):.0f} ms, p99 {pct(del_ms, 99):.0f} ms, max {max(del_ms):.0f} ms")


def load(a):
    prompts = ["Count the animals: horse, pig, mouse, fox.", "I loved this film, the actors were wonderful.",
               "Rewrite: Anna gave the book to Tom.", "News of the week. Reports say Clara found a book."]
    stop, done, errors, lock = time.monotonic() + a.seconds, [0], [0], threading.Lock()

    def client(k):
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=120)
        i = k
        while time.monotonic() < stop:
            body = json.dumps({"prompt": prompts[i % len(prompts)], "retrieve": 3, "max_tokens": a.max_tokens, "temperature": 0})
            i += 1
            try:
                status, _ = request(conn, "POST", "/v1/completions", body)
                ok = status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=120)
            with lock:
                done[0] += ok
                errors[0] += not ok

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    print(json.dumps({"requests": done[0], "errors": errors[0], "seconds": round(secs, 2), "rps": round(done[0] / secs, 2)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["visible", "load"])
    ap.add_argument("--a", type=int)
    ap.add_argument("--b", type=int)
    ap.add_argument("--demo")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--port", type=int)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--max-tokens", type=int, default=16)
    a = ap.parse_args()
    visible(a) if a.what == "visible" else load(a)


if __name__ == "__main__":
    main()
