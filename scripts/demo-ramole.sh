#!/bin/sh
# demo-ramole.sh — RAMoLE end to end on toy tasks, from nothing, in about a minute:
#   1. a tiny byte-level base model learns to copy words (`ramole train`),
#   2. two LoRA adapters learn to reverse / rotate 5-letter words on the frozen
#      base (`ramole lora train`),
#   3. a pool holds them with 20 sample inputs each (`ramole pool init / add`),
#   4. a mixed stream of unlabelled requests: each one's adapter is retrieved
#      from its text and applied (`ramole generate --pool`); the answers are
#      checked against the truth.
# Run from the repository root after `make`; files go to build/ramole-demo/.
set -e
R=./build/ramole
D=build/ramole-demo
mkdir -p $D
gen() { awk -v task="$1" -v n="$2" -v seed="$3" -f scripts/demo-data/words.awk > "${4:-/dev/stdout}"; }
gen cp 4000 1 $D/base.jsonl
gen rev 2000 2 $D/reverse.jsonl
gen rot 2000 3 $D/rotate.jsonl
printf '{inputs}=' > $D/template.txt

echo "== 1. base model (copies words; knows neither task)"
[ -f $D/base.gguf ] || $R train --config scripts/demo-data/toy-base.json --data $D/base.jsonl --template $D/template.txt --out $D/base.gguf
for task in reverse rotate; do
    echo "== 2. LoRA adapter '$task'"
    [ -f $D/$task/adapter_config.json ] || $R lora train --base $D/base.gguf --data $D/$task.jsonl --template $D/template.txt \
        --out $D/$task --rank 16 --targets all --steps 800 --lr 1e-2 --batch 8 --seq 64 --eval-em 50
    head -20 $D/$task.jsonl > $D/$task.samples.jsonl
done

echo "== 3. the pool"
rm -rf $D/pool
cat $D/reverse.samples.jsonl $D/rotate.samples.jsonl > $D/corpus.jsonl
$R pool init --pool $D/pool --corpus $D/corpus.jsonl
$R pool add --pool $D/pool --name reverse --samples $D/reverse.samples.jsonl --weights $D/reverse
$R pool add --pool $D/pool --name rotate --samples $D/rotate.samples.jsonl --weights $D/rotate

echo "== 4. a mixed stream of requests nobody labelled (new words)"
gen rev 6 40 $D/mixed.jsonl
gen rot 6 41 $D/mixed2.jsonl
n=0; right=0; picked=0; base_right=0
for line in $(cat $D/mixed.jsonl $D/mixed2.jsonl | sed 's/[{} "]//g'); do
    input=$(echo "$line" | sed 's/inputs:\([^,]*\),targets:.*/\1/')
    want=$(echo "$line" | sed 's/.*targets://')
    task=${input%%:*}
    out=$($R generate -m $D/base.gguf --pool $D/pool --retrieve 1 -p "$input=" -n 8 --temp 0 -t 1 2>$D/err.txt | sed "s/^$input=//")
    adapter=$(sed -n 's/^retrieved: \([a-z]*\) .*/\1/p' $D/err.txt)
    base=$($R generate -m $D/base.gguf -p "$input=" -n 8 --temp 0 -t 1 2>/dev/null | sed "s/^$input=//")
    [ "$base" = "$want" ] && base_right=$((base_right + 1))
    n=$((n + 1))
    case "$task:$adapter" in rev:reverse|rot:rotate) picked=$((picked + 1)) ;; esac
    mark="wrong"; [ "$out" = "$want" ] && { right=$((right + 1)); mark="ok"; }
    printf '  %-12s -> adapter %-8s -> %-6s (%-5s)   base model alone: %s\n' "$input" "$adapter" "$out" "$mark" "$base"
done
echo "RAMoLE on $n mixed requests: the right adapter retrieved for $picked, the right answer for $right (base model alone: $base_right)"

echo "== 5. the same scored in one batched run (\`ramole eval\`): 60 more new requests, exact match by task"
gen rev 30 50 | sed 's/}$/, "task": "reverse"}/' > $D/eval.jsonl
gen rot 30 51 | sed 's/}$/, "task": "rotate"}/' >> $D/eval.jsonl
score() { # label, then the adapter options
    label=$1; shift
    $R eval -m $D/base.gguf --test $D/eval.jsonl --template-file $D/template.txt -n 8 -t 2 --json "$@" 2>/dev/null |
        sed 's/.*"reverse": {[^}]*"score": \([0-9.]*\)}.*"rotate": {[^}]*"score": \([0-9.]*\)}.*/\1 \2/' |
        { read rev rot; printf '  %-44s reverse %5.1f   rotate %5.1f\n' "$label" "$rev" "$rot"; }
}
score "base model alone"
score "RAMoLE, retrieve 1 (selection)" --pool $D/pool --retrieve 1
score "each request's own adapter (oracle)" --pool $D/pool --oracle
score "both adapters, mixture (average of outputs)" --pool $D/pool --retrieve 2 --compose mixture
score "both adapters, fusion (average of weights)" --pool $D/pool --retrieve 2 --compose fusion

echo "== 6. RouterLoRA: a router learns to weigh the two adapters per token (\`ramole router train\`, ~1 min)"
if [ ! -f $D/router-demo.gguf ]; then
    gen rev 5000 20 $D/mix-a.jsonl; gen rot 5000 21 $D/mix-b.jsonl
    paste -d'\n' $D/mix-a.jsonl $D/mix-b.jsonl > $D/mixed-train.jsonl
    $R router train --base $D/base.gguf --lora $D/reverse,$D/rotate --data $D/mixed-train.jsonl --template $D/template.txt \
        --out $D/router-demo.gguf --rank 4 --alpha 8 --steps 3000 --lr 1e-3 --batch 8 --seq 64 --seed 1 --eval-em 0 2>&1 | tail -1
fi
score "both adapters, RouterLoRA (learned weights)" --pool $D/pool --retrieve 2 --compose router --router $D/router-demo.gguf
