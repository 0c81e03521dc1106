#!/bin/sh
# demo-router.sh — RouterLoRA on the toy tasks of demo-ramole.sh: every request
# gets BOTH adapters (reverse and rotate, k = 2, as if retrieval returned both)
# and the composition has to pick per token. Exact match on held-out words for
#   oracle   selection of the right adapter
#   mixture  the average of the two adapters' outputs
#   fusion   the averaged A and B
#   router   the trained RouterLoRA (`ramole router train`)
# Usage: scripts/demo-router.sh [SEED ...] (router seeds; default 1). Run from
# the repository root after `make`; files go to build/ramole-demo/.
set -e
R=./build/ramole
D=build/ramole-demo
N=${N:-50}            # held-out requests per task
STEPS=${STEPS:-3000}  # router training steps
mkdir -p $D
gen() { awk -v task="$1" -v n="$2" -v seed="$3" -f scripts/demo-data/words.awk > "$4"; }
printf '{inputs}=' > $D/template.txt
[ -f $D/base.gguf ] || { gen cp 4000 1 $D/base.jsonl;
    $R train --config scripts/demo-data/toy-base.json --data $D/base.jsonl --template $D/template.txt --out $D/base.gguf; }
for task in reverse rotate; do
    short=rev; [ $task = rotate ] && short=rot
    seed=2; [ $task = rotate ] && seed=3
    [ -f $D/$task/adapter_config.json ] || { gen $short 2000 $seed $D/$task.jsonl;
        $R lora train --base $D/base.gguf --data $D/$task.jsonl --template $D/template.txt \
            --out $D/$task --rank 16 --targets all --steps 800 --lr 1e-2 --batch 8 --seq 64 --eval-em 50; }
done
# the router's training set: new words of both tasks, interleaved; held-out: others again
gen rev 5000 20 $D/mix-a.jsonl; gen rot 5000 21 $D/mix-b.jsonl
paste -d'\n' $D/mix-a.jsonl $D/mix-b.jsonl > $D/mixed-train.jsonl
gen rev $N 50 $D/held-rev.jsonl; gen rot $N 51 $D/held-rot.jsonl

# em FILE ARGS...: exact match (percent) of greedy answers over FILE's requests (`ramole eval`)
em() {
    file=$1; shift
    $R eval -m $D/base.gguf --test $file --template-file $D/template.txt -n 8 -t 2 --json "$@" 2>/dev/null |
        sed 's/.*"em": \([0-9.]*\).*/\1/' | xargs printf '%.0f'
}
both="--lora $D/reverse --lora $D/rotate"
oracle=$(( ($(em $D/held-rev.jsonl --lora $D/reverse) + $(em $D/held-rot.jsonl --lora $D/rotate)) / 2 ))
mixture=$(( ($(em $D/held-rev.jsonl $both --compose mixture) + $(em $D/held-rot.jsonl $both --compose mixture)) / 2 ))
fusion=$(( ($(em $D/held-rev.jsonl $both --compose fusion) + $(em $D/held-rot.jsonl $both --compose fusion)) / 2 ))
echo "exact match on $((2 * N)) held-out requests (half reverse, half rotate), both adapters on every request:"
echo "  oracle (selection of the right adapter): $oracle%"
echo "  mixture: $mixture%"
echo "  fusion:  $fusion%"
for seed in ${@:-1}; do
    $R router train --base $D/base.gguf --lora $D/reverse,$D/rotate --data $D/mixed-train.jsonl --template $D/template.txt \
        --out $D/router-$seed.gguf --rank 4 --alpha 8 --steps $STEPS --lr 1e-3 --batch 8 --seq 64 --seed $seed --eval-em 0 2>&1 | tail -1
    a=$(em $D/held-rev.jsonl $both --compose router --router $D/router-$seed.gguf)
    b=$(em $D/held-rot.jsonl $both --compose router --router $D/router-$seed.gguf)
    echo "  router (seed $seed): $(( (a + b) / 2 ))% (reverse $a%, rotate $b%)"
done
