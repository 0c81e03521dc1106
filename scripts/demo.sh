#!/bin/sh
# demo.sh — ramole's main job on a bundled default: installs missing Debian
# packages, builds, writes a small model (`ramole synth`), and generates from it.
set -e
cd "$(dirname "$0")/.."
./scripts/deps.sh
make -j2 all
make run
