#!/bin/sh
# pool-kill-test.sh — kill -9 during CLI pool adds (docs/reliability.md).
#   scripts/pool-kill-test.sh [ROUNDS] [RAMOLE]
# Each round starts `ramole pool add` of a new adapter and kills it with
# SIGKILL after a random delay (0-1.2 s; an add takes 0.4-1 s here) while
# readers keep opening the pool and retrieving from it. An add that printed "added" is acknowledged. At
# the end every acknowledged adapter must be in the pool, `ramole pool check`
# must pass (no adapter without samples or key: none half-present), and the
# reader must never have failed. Prints one summary line.
set -e
rounds=${1:-200}
bin=${2:-build/ramole}
dir=$(mktemp -d /tmp/ramole-kill-XXXXXX)
trap 'rm -rf "$dir"' EXIT
pool=$dir/pool
# Samples: 200 lines, so an add has real work (embedding, 200 rows) to be killed in.
i=0
while [ $i -lt 200 ]; do
    echo "{\"inputs\": \"sample $i of a task about the weather and the news, word$((i % 17)) word$((i % 5))\"}"
    i=$((i + 1))
done >"$dir/samples.jsonl"
"$bin" pool init --pool "$pool" --corpus "$dir/samples.jsonl" --embedder lexical 2>/dev/null
# The reader: another process with the pool open, retrieving all the while.
( while [ ! -f "$dir/stop" ]; do
      "$bin" retrieve --pool "$pool" -p "the weather word3" -k 3 >/dev/null 2>>"$dir/reader.err" || echo fail >>"$dir/reader.fail"
  done ) &
reader=$!
acked=0 killed=0 r=0
while [ $r -lt $rounds ]; do
    "$bin" pool add --pool "$pool" --name "a$r" --samples "$dir/samples.jsonl" 2>"$dir/add.err" &
    pid=$!
    delay=$(awk -v s="$r" 'BEGIN { srand(s); printf "%.3f", rand() * 1.2 }')
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null || true
    st=0
    wait "$pid" 2>/dev/null || st=$?
    [ "$st" = 137 ] && killed=$((killed + 1))
    grep -q "^added 'a$r'" "$dir/add.err" && { acked=$((acked + 1)); echo "a$r" >>"$dir/acked"; } || true
    r=$((r + 1))
done
touch "$dir/stop"
wait "$reader" || true
"$bin" pool list --pool "$pool" --json >"$dir/list.json" 2>/dev/null
present=$(grep -o '"name": "a[0-9]*"' "$dir/list.json" | wc -l)
lost=0
[ -f "$dir/acked" ] && while read -r name; do
    grep -q "\"name\": \"$name\"" "$dir/list.json" || lost=$((lost + 1))
done <"$dir/acked"
if "$bin" pool check --pool "$pool" >/dev/null 2>"$dir/check.err"; then half=0; else half="check failed: $(cat "$dir/check.err")"; fi
reader_fail=$( [ -f "$dir/reader.fail" ] && wc -l <"$dir/reader.fail" || echo 0)
echo "rounds $rounds: killed mid-add $killed, acknowledged $acked, present $present, lost $lost, half-present $half, reader failures $reader_fail"
[ "$lost" = 0 ] && [ "$half" = 0 ] && [ "$reader_fail" = 0 ]
