#!/bin/bash
# bench/cluster.sh — figures for replicas sharing one pool in PostgreSQL
# behind nginx (docs/deploy.md): upload-to-visible and delete-to-gone times
# across replicas (p50/p99), and requests/s through nginx with 2 replicas and
# with 1 (the ratio). Brings scripts/cluster.sh's deployment up on ports of
# its own and down at the end.
#
#   bench/cluster.sh [ROUNDS [SECONDS [CLIENTS]]]     (40, 20, 8)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-40}
seconds=${2:-20}
clients=${3:-8}
export CLUSTER_DIR=${CLUSTER_DIR:-/tmp/ramole-cluster-bench} PG_PORT=${PG_PORT:-55442} LB_PORT=${LB_PORT:-8090}
export A_PORT=${A_PORT:-8091} B_PORT=${B_PORT:-8092}
demo=${RAMOLE_DEMO_DIR:-build/demo-world}
scripts/cluster.sh up
trap 'scripts/cluster.sh down' EXIT
nginx_conf=(-p "$CLUSTER_DIR/nginx" -c "$CLUSTER_DIR/nginx/nginx.conf" -e "$CLUSTER_DIR/nginx/logs/error.log")
echo "== upload-to-visible across replicas ($rounds rounds)"
python3 bench/cluster_load.py visible --a "$A_PORT" --b "$B_PORT" --demo "$demo" --n "$rounds"
echo "== requests/s through nginx, $clients clients, $seconds s each, retrieving completions of 16 tokens"
two=$(python3 bench/cluster_load.py load --port "$LB_PORT" --clients "$clients" --seconds "$seconds")
echo "2 replicas: $two"
sed -i "/server 127.0.0.1:$B_PORT /d" "$CLUSTER_DIR/nginx/ramole.conf"
nginx "${nginx_conf[@]}" -s reload
sleep 2
one=$(python3 bench/cluster_load.py load --port "$LB_PORT" --clients "$clients" --seconds "$seconds")
echo "1 replica:  $one"
python3 -c "import json,sys; a,b=json.loads(sys.argv[1]),json.loads(sys.argv[2]); print(f'ratio 2 replicas / 1: {a[\"rps\"]/b[\"rps\"]:.2f}')" "$two" "$one"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
