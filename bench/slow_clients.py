#!/usr/bin/env python3
# slow_clients.py — `ramole serve` against slow clients (docs/reliability.md):
# N connections, each sending its request head one byte a second (and opening
# again, at the next second, when the server closes it), spread over A client addresses of
# 127.0.0.0/8, for S seconds; meanwhile a fresh client (its own address) asks
# GET /health every 100 ms. Prints how many health checks answered 200, their
# latency (p50 / p99 / max), how the slow connections fared, and the server's
# connection counters.
#
#   python3 bench/slow_clients.py --bin build/ramole --model tiny.gguf [--conns 1000] [--addrs 1]
#                                 [--seconds 60] [-- extra serve options]
#
# The server is started here (--port 0, defaults for every limit unless given
# after --) and stopped with SIGTERM. The open-file limit is raised to fit.
import argparse
import re
import resource
import selectors
import signal
import socket
import statistics
import sys
import threading
import time

from serve_load import read_to_close, start_server


def get(port, path, src, timeout=5.0):
    """GET path from source address src: (status, seconds); status 0 when closed unanswered, -1 on a timeout."""
    t0 = time.monotonic()
    try:
        s = socket.socket()
        s.settimeout(timeout)
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
        buf = read_to_close(s)
        m = re.match(rb"HTTP/1\.1 (\d+)", buf)
        return (int(m.group(1)) if m else 0), time.monotonic() - t0, buf
    except OSError:
        return -1, time.monotonic() - t0, b""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/ramole")
    ap.add_argument("--model", required=True)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--addrs", type=int, default=1, help="client addresses the slow connections come from (127.0.1.x)")
    ap.add_argument("--seconds", type=float, default=60)
    a, extra = ap.parse_known_args()
    extra = [x for x in extra if x != "--"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, a.conns + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < a.conns + 64:
        sys.exit(f"the open-file limit ({hard}) is too low for {a.conns} connections")
    srv, port = start_server([a.bin, "serve", "-m", a.model, "--port", "0", "-t", "1", "--log-format", "none"] + extra)
    head = b"POST /v1/completions HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 4000
    sel = selectors.DefaultSelector()
    slow = {}  # socket -> [address, bytes sent]
    stats = {"opened": 0, "refused": 0, "closed_by_server": 0, "bytes": 0}

    def open_one(i):
        src = f"127.0.1.{1 + i % a.addrs}"
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((src, 0))
            s.connect_ex(("127.0.0.1", port))
        except OSError:
            s.close()
            stats["refused"] += 1
            return
        slow[s] = [i, 0]
        sel.register(s, selectors.EVENT_READ)
        stats["opened"] += 1

    def drop(s, by_server):
        sel.unregister(s)
        s.close()
        i = slow.pop(s)[0]
        if by_server:
            stats["closed_by_server"] += 1
        return i

    for i in range(a.conns):
        open_one(i)
    probes, stop = [], [False]

    def prober():  # a fresh client, every 100 ms
        while not stop[0]:
            st, dt, _ = get(port, "/health", "127.0.0.2")
            probes.append((st, dt))
            time.sleep(0.1)

    pt = threading.Thread(target=prober)
    pt.start()
    t_end = time.monotonic() + a.seconds
    next_tick = time.monotonic()
    reopen = []  # closed by the server: opened again at the next second
    while time.monotonic() < t_end:
        for key, _ in sel.select(timeout=0.05):  # the server closed (or answered): open again
            s = key.fileobj
            try:
                d = s.recv(4096)
            except OSError:
                d = b""
            if not d:
                reopen.append(drop(s, True))
        if time.monotonic() >= next_tick:  # one byte a second on every slow connection
            next_tick += 1.0
            for i in reopen:
                open_one(i)
            reopen.clear()
            for s, st in list(slow.items()):
                if st[1] >= len(head):
                    continue
                try:
                    if s.send(head[st[1]:st[1] + 1]) == 1:
                        st[1] += 1
                        stats["bytes"] += 1
                except BlockingIOError:
                    pass
                except OSError:
                    reopen.append(drop(s, True))
    stop[0] = True
    pt.join()
    alive = len(slow)
    for s in list(slow):
        drop(s, False)
    time.sleep(0.5)
    _, _, metrics = get(port, "/metrics", "127.0.0.3")
    srv.send_signal(signal.SIGTERM)
    srv.wait(timeout=60)
    ok = [dt for st, dt in probes if st == 200]
    bad = [st for st, dt in probes if st != 200]
    q = statistics.quantiles(ok, n=100, method="inclusive") if len(ok) >= 2 else [float("nan")] * 99
    print(f"slow connections: {a.conns} from {a.addrs} address(es), {a.seconds:.0f} s, one byte a second: opened {stats['opened']} "
          f"(re-opened after a close included), closed by the server {stats['closed_by_server']}, still open on the client side at the end {alive}, "
          f"bytes sent {stats['bytes']}")
    print(f"GET /health from a fresh client every 100 ms: {len(probes)} asked, {len(ok)} answered 200, failures {len(bad)} {sorted(set(bad))}")
    if ok:
        print(f"  latency p50 {1000 * q[49]:.1f} ms, p99 {1000 * q[98]:.1f} ms, max {1000 * max(ok):.1f} ms")
    for name in ("connections_deadline_closed_total", "connections_reserve_total"):
        m = re.search(rb"\nramole_" + name.encode() + rb" (\S+)", metrics)
        print(f"  {name}: {m.group(1).decode() if m else '?'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
