#!/bin/bash
# cluster.sh — the deployment of docs/deploy.md on one machine: PostgreSQL in
# a temporary folder on a local port holding the adapter pool, two replicas
# of `ramole serve` on the small demo model sharing it, nginx in front
# (deploy/nginx-ramole.conf).
#
#   scripts/cluster.sh up         start it all and print the addresses
#   scripts/cluster.sh down       stop it all and remove the folder
#   scripts/cluster.sh selftest   up; upload an adapter through replica A,
#                                 retrieve it through replica B (and nginx);
#                                 down; the last line is PASS or FAIL with
#                                 the upload-to-visible time
#
# Environment: CLUSTER_DIR (/tmp/ramole-cluster), PG_PORT (55432), LB_PORT
# (8080), A_PORT (8081), B_PORT (8082), RAMOLE_DEMO_DIR (build/demo-world,
# built when absent, about 4 minutes), RAMOLE_PG_BIN (PostgreSQL's programs).
# As root, PostgreSQL runs as the user postgres (it refuses root).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CLUSTER_DIR:-/tmp/ramole-cluster}
pg_port=${PG_PORT:-55432}
lb_port=${LB_PORT:-8080}
a_port=${A_PORT:-8081}
b_port=${B_PORT:-8082}
demo=${RAMOLE_DEMO_DIR:-build/demo-world}
pgbin=${RAMOLE_PG_BIN:-/usr/lib/postgresql/15/bin}
bin=./build/ramole
seed_tasks="count_animals rewrite_giving topic_crier"
test_task=sentiment_film
url="postgresql://ramole@127.0.0.1:$pg_port/ramole?weights=$dir/weights"

say() { echo "cluster: $*" >&2; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
now_ns() { date +%s%N; }

need() {
    local missing=""
    [ -x "$pgbin/pg_ctl" ] || missing="$missing postgresql-15"
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
    command -v curl >/dev/null || missing="$missing curl"
    command -v jq >/dev/null || missing="$missing jq"
    if [ -n "$missing" ]; then
        say "missing:$missing (scripts/deps.sh test installs them as root)"
        exit 1
    fi
}

# The upload of a demo task's adapter: PORT NAME TASK; prints the HTTP status.
upload() {
    local d="$demo/adapters/$3"
    jq -cs '[.[].inputs][:50]' "$demo/samples/$3.jsonl" >"$dir/samples-$2.json"
    curl -s -o "$dir/upload-$2.json" -w '%{http_code}' -F "name=$2" -F "task=$3" -F "samples=<$dir/samples-$2.json" \
        -F "config=@$d/adapter_config.json;filename=adapter_config.json" \
        -F "weights=@$d/adapter_model.safetensors;filename=adapter_model.safetensors" "http://127.0.0.1:$1/v1/adapters" || echo 000
}

# Succeeds when a retrieving completion on PORT for QUERY chooses NAME.
retrieved() {
    local body
    body=$(jq -cn --arg p "$2" '{prompt: $p, retrieve: 3, max_tokens: 1, temperature: 0}')
    curl -s -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$1/v1/completions" |
        jq -e --arg n "$3" '[.adapters[]?.name] | index($n) != null' >/dev/null 2>&1
}

wait_health() { # PORT: up to 60 s for 200 from /health
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

start_replica() { # NAME PORT
    setsid "$bin" serve -m "$demo/base.gguf" --pool "$url" --port "$2" -t 1 --ctx 512 >"$dir/replica-$1.log" 2>&1 &
    echo $! >"$dir/replica-$1.pid"
}

up() {
    need
    [ -x "$bin" ] || make -j2 all >&2
    if [ ! -f "$demo/base.gguf" ] || [ ! -f "$demo/pool/embedder.bin" ]; then
        say "building the demo world in $demo (about 4 minutes)"
        [ -f "$demo/world.json" ] || "$bin" world make --out "$demo" --seed 1 --size small >&2
        "$bin" world build "$demo" >&2
    fi
    [ -e "$dir" ] && { say "$dir exists: run scripts/cluster.sh down first"; exit 1; }
    mkdir -p "$dir/pg" "$dir/weights" "$dir/nginx/logs" "$dir/nginx/tmp"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/pg"
    say "PostgreSQL on 127.0.0.1:$pg_port ($dir/pg)"
    as_pg "$pgbin/initdb" -D "$dir/pg/data" -A trust -U ramole -E UTF8 --locale=C >"$dir/pg/initdb.log" 2>&1
    as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w \
        -o "-p $pg_port -k $dir/pg -c listen_addresses=127.0.0.1" start >/dev/null
    as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U ramole ramole
    "$bin" pool set-embedder --pool "$url" --embedder "$demo/pool/embedder.bin" >&2
    say "replicas A on :$a_port and B on :$b_port"
    start_replica a "$a_port"
    start_replica b "$b_port"
    wait_health "$a_port" && wait_health "$b_port" || { say "a replica did not start (see $dir/replica-*.log)"; exit 1; }
    say "nginx on 127.0.0.1:$lb_port"
    sed -e "s|listen 127.0.0.1:8080;|listen 127.0.0.1:$lb_port;|" \
        -e "s|server 127.0.0.1:8081 |server 127.0.0.1:$a_port |" \
        -e "s|server 127.0.0.1:8082 |server 127.0.0.1:$b_port |" deploy/nginx-ramole.conf >"$dir/nginx/ramole.conf"
    cat >"$dir/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/logs/error.log;
events { worker_connections 1024; }
http {
    access_log $dir/nginx/logs/access.log;
    client_body_temp_path $dir/nginx/tmp/body;
    proxy_temp_path $dir/nginx/tmp/proxy;
    fastcgi_temp_path $dir/nginx/tmp/fastcgi;
    uwsgi_temp_path $dir/nginx/tmp/uwsgi;
    scgi_temp_path $dir/nginx/tmp/scgi;
    include $dir/nginx/ramole.conf;
}
EOF
    chmod -R a+rwx "$dir/nginx/tmp" # nginx's workers run as nobody when started by root
    nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$dir/nginx/logs/error.log"
    wait_health "$lb_port" || { say "nginx does not answer (see $dir/nginx/logs/error.log)"; exit 1; }
    for t in $seed_tasks; do
        code=$(upload "$lb_port" "$t" "$t")
        [ "$code" = 201 ] || { say "seeding $t through nginx: HTTP $code ($(cat "$dir/upload-$t.json"))"; exit 1; }
    done
    say "up: nginx http://127.0.0.1:$lb_port, replicas :$a_port :$b_port, pool $url"
}

down() {
    for r in a b; do
        if [ -f "$dir/replica-$r.pid" ]; then
            pid=$(cat "$dir/replica-$r.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
    [ -f "$dir/nginx/nginx.pid" ] && nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$dir/nginx/logs/error.log" -s quit 2>/dev/null || true
    [ -d "$dir/pg/data" ] && as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -w -m fast stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

selftest() {
    result="FAIL: the cluster did not come up"
    trap 'down; echo "$result"' EXIT
    up
    local name="selftest-$test_task" query
    query=$(jq -r '.inputs' "$demo/samples/$test_task.jsonl" | tail -1)
    if retrieved "$b_port" "$query" "$name"; then result="FAIL: B retrieves $name before it was uploaded"; exit 1; fi
    local t0 t1 t2 code
    t0=$(now_ns)
    code=$(upload "$a_port" "$name" "$test_task")
    t1=$(now_ns)
    if [ "$code" != 201 ]; then result="FAIL: the upload through replica A answered HTTP $code: $(cat "$dir/upload-$name.json")"; exit 1; fi
    t2=""
    for _ in $(seq 1000); do # up to about 10 s
        if retrieved "$b_port" "$query" "$name"; then t2=$(now_ns); break; fi
    done
    if [ -z "$t2" ]; then result="FAIL: replica B did not retrieve $name within 10 s of the upload"; exit 1; fi
    if ! retrieved "$lb_port" "$query" "$name"; then result="FAIL: retrieval through nginx misses $name"; exit 1; fi
    result=$(printf 'PASS: uploaded through replica A (HTTP 201 in %d ms), retrieved through replica B %d ms after the answer (polled with curl, a completion per try)' \
        $(((t1 - t0) / 1000000)) $(((t2 - t1) / 1000000)))
}

case "${1:-}" in
up) up ;;
down) down ;;
selftest) selftest ;;
*) echo "usage: scripts/cluster.sh up|down|selftest" >&2; exit 2 ;;
esac
