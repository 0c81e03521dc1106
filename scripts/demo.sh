#!/bin/sh
# demo.sh — ramole's main job on a bundled default: installs missing Debian
# packages, builds, then runs the paper's experiment on the small world
# (docs/world.md): `ramole world make` writes 12 tasks in 4 clusters with
# their data, the pool file and the mixed test requests; `ramole world build`
# trains a base model, one contributor's LoRA adapter per task, adds them to a
# pool and trains the RouterLoRA and the gates on 40% of the tasks (~4 min on
# 2 cores); `ramole world check` prints the world's sanity figures and
# `ramole eval --table` the comparison of every method, in distribution and
# out of it (~3 min). Outputs in build/demo-world/ (table.md, table.svg).
# A second run reuses what is built.
set -e
cd "$(dirname "$0")/.."
./scripts/deps.sh
make -j2 all
dir=${RAMOLE_DEMO_DIR:-build/demo-world}
bin=./build/ramole
echo "== 1. the world: tasks, data, pool samples, mixed test requests ($dir)"
[ -f "$dir/world.json" ] || $bin world make --out "$dir" --seed 1 --size small
echo "== 2. base model, contributors' adapters, pool, RouterLoRA and gates"
$bin world build "$dir"
echo "== 3. sanity: base alone, each task's own adapter, a sibling's, a foreign cluster's"
$bin world check "$dir" --svg "$dir/check.svg"
echo "== 4. the paper's table: every method, in distribution (IID) and out of it (OOD)"
$bin eval --table "$dir" --svg "$dir/table.svg" | tee "$dir/table.md"
echo "table in $dir/table.md, chart in $dir/table.svg"
