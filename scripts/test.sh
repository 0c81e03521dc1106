#!/bin/sh
# test.sh — the test command: installs missing Debian packages (scripts/deps.sh test:
# the build's, and PostgreSQL and nginx for the cluster tests),
# builds, and runs the whole suite optimized and under ASan+UBSan. The two
# suites run at the same time; each one's output is printed whole after it,
# under its own heading, the optimized one first.
set -e
cd "$(dirname "$0")/.."
./scripts/deps.sh test
make -j2 all build/ramole-tests build-san/ramole build-san/ramole-tests
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
make --no-print-directory test-opt >"$logs/opt" 2>&1 && echo 0 >"$logs/opt.rc" || echo $? >"$logs/opt.rc" &
make --no-print-directory test-san >"$logs/san" 2>&1 && echo 0 >"$logs/san.rc" || echo $? >"$logs/san.rc" &
wait
status=0
for suite in opt san; do
    case $suite in opt) title="optimized (build/)" ;; *) title="ASan+UBSan (build-san/)" ;; esac
    echo "==== tests, $title"
    cat "$logs/$suite"
    [ "$(cat "$logs/$suite.rc")" = 0 ] || status=1
done
summary() { grep -E '^[0-9]+ passed' "$logs/$1" | tail -n 1 || echo "did not finish"; }
echo "==== optimized: $(summary opt)"
echo "==== ASan+UBSan: $(summary san)"
exit $status
