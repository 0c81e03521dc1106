#!/bin/sh
# demo.sh — ramole's main job on a bundled default: installs missing Debian
# packages, builds, trains a small byte-level model on the project's docs
# (`ramole train`, ~45 s) and generates from it; then RAMoLE end to end on toy
# tasks (scripts/demo-ramole.sh, ~40 s): a base model, two LoRA adapters
# trained on it, a pool, and a mixed stream of unlabelled requests each served
# with the adapter retrieved from its text.
set -e
cd "$(dirname "$0")/.."
./scripts/deps.sh
make -j2 all
make run
echo
./scripts/demo-ramole.sh
