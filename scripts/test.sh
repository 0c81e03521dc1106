#!/bin/sh
# test.sh — the test command: installs missing Debian packages (scripts/deps.sh),
# builds, and runs the whole suite optimized and under ASan+UBSan.
set -e
cd "$(dirname "$0")/.."
./scripts/deps.sh
make -j2 all
make -j2 test
