#!/usr/bin/env python3
# serve-kill-test.py — kill -9 of `ramole serve` during uploads
# (docs/reliability.md; scripts/pool-kill-test.sh does the same for the CLI).
#
#   python3 scripts/serve-kill-test.py --bin build/ramole --model tiny.gguf --files DIR [--rounds 50]
#
# Each round starts the server on a pool, lets two clients upload adapters
# (multipart POST /v1/adapters, GGUF files from DIR, e.g. bench/make_adapters.py's)
# one after another, and kills the server with SIGKILL after a random delay
# (0.3-1.5 s). An upload answered 201 is acknowledged. At the end every
# acknowledged adapter must be in the pool with its weights file present and
# loadable, `ramole pool check` must pass, and no adapter may be in the pool
# without its files (half-present). Prints one summary line.
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from serve_load import start_server, upload  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/ramole")
    ap.add_argument("--model", required=True)
    ap.add_argument("--files", required=True)
    ap.add_argument("--rounds", type=int, default=50)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ramole-serve-kill-")
    pool = os.path.join(work, "pool")
    corpus = os.path.join(work, "corpus.jsonl")
    with open(corpus, "w") as f:
        for k in range(50):
            f.write(json.dumps(f"samples of task {k} about words{k % 7}") + "\n")
    subprocess.run([a.bin, "pool", "init", "--pool", pool, "--corpus", corpus, "--embedder", "shape"], check=True, stderr=subprocess.DEVNULL)
    files = sorted(os.path.join(a.files, f) for f in os.listdir(a.files) if f.endswith(".gguf"))
    rng = random.Random(5)
    acked, sent, killed_mid, counter = [], [0], 0, [0]
    lock = threading.Lock()
    for r in range(a.rounds):
        srv, port = start_server([a.bin, "serve", "-m", a.model, "--pool", pool, "--port", "0", "-t", "1", "--log-format", "none"])
        stop = [False]
        inflight = [0]

        def uploader():
            while not stop[0]:
                with lock:
                    k = counter[0]
                    counter[0] += 1
                    inflight[0] += 1
                name = f"k{k}"
                try:
                    upload(port, name, files[k % len(files)])
                    with lock:
                        acked.append(name)
                except Exception:
                    pass
                with lock:
                    sent[0] += 1
                    inflight[0] -= 1

        ts = [threading.Thread(target=uploader) for _ in range(2)]
        for t in ts:
            t.start()
        time.sleep(0.3 + 1.2 * rng.random())
        with lock:
            killed_mid += inflight[0] > 0
        srv.send_signal(signal.SIGKILL)
        srv.wait()
        stop[0] = True
        for t in ts:
            t.join()
    def upload_folders():
        d = os.path.join(pool, "adapters")
        return [e for e in os.listdir(d) if e.startswith(".upload-")] if os.path.isdir(d) else []

    left_by_kills = len(upload_folders())
    srv, port = start_server([a.bin, "serve", "-m", a.model, "--pool", pool, "--port", "0", "-t", "1", "--log-format", "none"])
    srv.send_signal(signal.SIGTERM)  # a server started once more removes what the dead ones left
    srv.wait()
    listing = subprocess.run([a.bin, "pool", "list", "--pool", pool, "--json"], capture_output=True, text=True).stdout
    present = {}
    for item in json.loads(listing) if listing.strip().startswith("[") else json.loads(listing).get("adapters", []):
        present[item["name"]] = item.get("weights")
    lost = [n for n in acked if n not in present]
    half = [n for n, w in present.items() if not w or not os.path.exists(w)]
    unloadable = 0
    for n, w in present.items():
        if w and os.path.exists(w) and subprocess.run([a.bin, "lora", "info", w, "--base", a.model], capture_output=True).returncode:
            unloadable += 1
    check = subprocess.run([a.bin, "pool", "check", "--pool", pool], capture_output=True, text=True)
    leftovers = upload_folders()
    print(f"rounds {a.rounds}: upload attempts {sent[0]}, acknowledged {len(acked)}, killed with an upload in flight {killed_mid}, "
          f"in the pool {len(present)}, lost {len(lost)}, half-present {len(half)}, unloadable {unloadable}, pool check "
          f"{'ok' if check.returncode == 0 else 'FAILED: ' + check.stderr.strip()}, upload folders left by the last kill {left_by_kills}, after a server started once more {len(leftovers)}")
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if not lost and not half and not unloadable and check.returncode == 0 else 1)


if __name__ == "__main__":
    main()
