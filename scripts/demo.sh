#!/bin/sh
# demo.sh — ramole's main job on a bundled default: installs missing Debian
# packages, builds, trains a small byte-level model on the project's docs
# (`ramole train`, ~40 s) and generates from it.
set -e
cd "$(dirname "$0")/.."
./scripts/deps.sh
make -j2 all
make run
