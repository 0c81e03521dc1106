#!/bin/sh
# run.sh — runs libFuzzer harnesses one after the other (never two at once).
#   fuzz/run.sh [-t SECONDS] build-fuzz/fuzz_NAME ...
# Each harness starts from its corpus build-fuzz/corpus/NAME (seeded by
# fuzz/seeds.sh with files the project's own tools write, plus the regression
# inputs tests/regress/NAME) and fuzzes for SECONDS (default 20). A crash
# leaves its input as build-fuzz/crash-NAME-* and makes the script fail; a
# summary line per harness gives executions, coverage and the corpus size.
set -e
cd "$(dirname "$0")/.."
secs=20
if [ "$1" = "-t" ]; then secs=$2; shift 2; fi
[ $# -gt 0 ] || { echo "usage: fuzz/run.sh [-t SECONDS] build-fuzz/fuzz_NAME ..." >&2; exit 2; }
./fuzz/seeds.sh build-fuzz/corpus
failed=0
for bin in "$@"; do
    name=${bin##*/fuzz_}
    corpus=build-fuzz/corpus/$name
    mkdir -p "$corpus"
    [ -d "tests/regress/$name" ] && cp tests/regress/"$name"/* "$corpus"/ 2>/dev/null || true
    log=build-fuzz/fuzz-$name.log
    if "$bin" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="build-fuzz/crash-$name-" "$corpus" >"$log" 2>&1; then
        verdict=ok
    else
        verdict=FAILED
        failed=1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    printf '%-16s %-6s %6ss  %10s execs  cov %6s  ft %6s  corpus %5s files\n' "$name" "$verdict" "$secs" \
        "${execs:-?}" "${cov:-?}" "${ft:-?}" "$(ls "$corpus" | wc -l)"
    [ $verdict = ok ] || tail -40 "$log" >&2
done
exit $failed
