#!/bin/sh
# seeds.sh — writes the fuzzers' seed corpora with the project's own tools
# (nothing binary is committed for them):
#   fuzz/seeds.sh DIR     -> DIR/<target>/ for every target in fuzz/targets.c
# A small byte-level (and a BPE) model is trained for one step by `ramole train`,
# a LoRA adapter by `ramole lora train` (PEFT) and converted by `ramole lora
# convert` (GGUF). Runs once: DIR/.done marks a finished set.
set -e
cd "$(dirname "$0")/.."
out=${1:-build-fuzz/corpus}
[ -f "$out/.done" ] && exit 0
bin=${RAMOLE_BIN:-build/ramole}
[ -x "$bin" ] || make -s "$bin"
work=$out/.work
mkdir -p "$work" "$out/json" "$out/gguf" "$out/lora_gguf" "$out/safetensors" "$out/peft" "$out/tokenizer_json" \
    "$out/tokenize" "$out/llama2c" "$out/http" "$out/serve_body"

# Models: width 16, one layer; byte-level and with 8 BPE merges.
printf 'the cat sat on the mat. the dog sat on the log. a cat and a dog.\n' >"$work/text.txt"
for i in 1 2 3 4 5 6; do cat "$work/text.txt"; done >"$work/corpus.txt"
echo '{"n_embd": 16, "n_layer": 1, "n_head": 2, "n_ff": 32, "seq": 16, "batch": 2, "steps": 1}' >"$work/cfg.json"
echo '{"n_embd": 16, "n_layer": 1, "n_head": 2, "n_ff": 32, "seq": 16, "batch": 2, "steps": 1, "n_vocab": 266, "bpe_merges": 8}' >"$work/cfg-bpe.json"
"$bin" train --config "$work/cfg.json" --data "$work/corpus.txt" --out "$out/gguf/byte.gguf" --threads 1 >/dev/null 2>>"$out/seeds.log"
"$bin" train --config "$work/cfg-bpe.json" --data "$work/corpus.txt" --out "$out/gguf/bpe.gguf" --threads 1 >/dev/null 2>>"$out/seeds.log"
rm -f "$out"/gguf/*.svg

# Adapters on the byte-level model: PEFT (rank 2, q and v) and GGUF.
for i in 1 2 3 4 5 6 7 8; do echo '{"inputs": "the cat", "targets": "sat"}'; done >"$work/data.jsonl"
"$bin" lora train --base "$out/gguf/byte.gguf" --data "$work/data.jsonl" --out "$work/peft" --rank 2 --steps 1 \
    --batch 2 --seq 16 --threads 1 --eval-em 0 >/dev/null 2>>"$out/seeds.log"
"$bin" lora convert "$work/peft" "$out/lora_gguf/lora.gguf" --base "$out/gguf/byte.gguf" >/dev/null 2>>"$out/seeds.log"
cp "$work/peft/adapter_model.safetensors" "$out/safetensors/adapter.safetensors"
# The PEFT target's input: 2-byte little-endian config length, config, weights.
len=$(wc -c <"$work/peft/adapter_config.json")
printf "\\$(printf %03o $((len % 256)))\\$(printf %03o $((len / 256)))" >"$out/peft/adapter"
cat "$work/peft/adapter_config.json" "$work/peft/adapter_model.safetensors" >>"$out/peft/adapter"

# JSON: the project's configs and the adapter's.
cp scripts/demo-model.json "$out/json/"
cp "$work/peft/adapter_config.json" "$out/json/"
cp "$work/data.jsonl" "$out/json/data.json"

# tokenizer.json: the three families in their smallest form.
cat >"$out/tokenizer_json/bytelevel.json" <<'EOF'
{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3, "\u0120ab": 4}, "merges": ["a b", "\u0120 ab"]},
 "pre_tokenizer": {"type": "ByteLevel", "use_regex": true}, "added_tokens": [{"id": 5, "content": "<|end|>"}]}
EOF
cat >"$out/tokenizer_json/spm.json" <<'EOF'
{"model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>",
  "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x41>": 3, "\u2581": 4, "a": 5, "\u2581a": 6}, "merges": ["\u2581 a"]},
 "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"}]}}
EOF
cat >"$out/tokenizer_json/wordpiece.json" <<'EOF'
{"model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
  "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "cat": 3, "##s": 4}},
 "normalizer": {"type": "BertNormalizer", "lowercase": true}}
EOF

# Tokenizer inputs: each vocabulary slot (first byte) on a few texts.
i=0
for v in 0 1 2 3 4 5; do
    for text in "Hello world" "the cat sat" "caf$(printf '\303\251') 12345 <s>"; do
        printf "\\$(printf %03o $v)%s" "$text" >"$out/tokenize/t$i"
        i=$((i + 1))
    done
done

# llama2.c: a 28-byte header (dim 2, hidden 2, 1 layer, 1 head, 1 kv head,
# vocab 2 shared, seq 2) and the floats it declares (zeros).
printf '\002\000\000\000\002\000\000\000\001\000\000\000\001\000\000\000\001\000\000\000\002\000\000\000\002\000\000\000' \
    >"$out/llama2c/tiny.bin"
# embedding 4, rms_att 2, wq wk wv wo 4 each, rms_ffn 2, w1 w2 w3 4 each, rms_final 2, freq_cis 2 + 2
head -c $((42 * 4)) /dev/zero >>"$out/llama2c/tiny.bin"

# The server: whole requests (http) and bodies for each POST route (serve_body:
# the first byte picks the route, in fuzz/targets.c's order).
crlf() { printf '%s\r\n' "$@"; }
req() { # METHOD PATH BODY [EXTRA-HEADER]
    crlf "$1 $2 HTTP/1.1" "Host: fuzz" ${4:+"$4"} "Content-Type: application/json" "Content-Length: ${#3}" ""
    printf '%s' "$3"
}
body_c='{"prompt": "the cat", "max_tokens": 4, "temperature": 0, "stop": ["."], "logprobs": 2, "n": 2, "seed": 3}'
body_s='{"prompt": ["a cat", [97, 98]], "max_tokens": 3, "stream": true, "stream_options": {"include_usage": true}, "echo": true}'
body_chat='{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 3, "logprobs": true, "top_logprobs": 2}'
req GET /health "" >"$out/http/health"
req GET /metrics "" >"$out/http/metrics"
req GET /v1/models/fuzz-base "" >"$out/http/model"
req POST /v1/completions "$body_c" >"$out/http/completion"
req POST /v1/completions "$body_s" "Connection: keep-alive" >"$out/http/stream"
{ req POST /v1/chat/completions "$body_chat"; req GET /health ""; } >"$out/http/pipelined"
crlf "POST /tokenize HTTP/1.1" "Host: fuzz" "Transfer-Encoding: chunked" "" "b" '{"prompt": ' "6" '"cat"}' "0" "" >"$out/http/chunked"
i=0
for b in "$body_c" "$body_chat" '{"input": ["the cat", "a dog"], "model": "fuzz-base"}' '{"prompt": "the cat", "add_special_tokens": false}' \
    '{"tokens": [1, 97, 98, 99]}' '{"name": "x", "weights": "/etc/passwd", "samples": ["a"]}' "" '{"lora_name": "x"}'; do
    printf "\\$(printf %03o $i)%s" "$b" >"$out/serve_body/route$i"
    i=$((i + 1))
done
# a multipart upload of the GGUF adapter made above (route 6)
{
    printf '\006'
    crlf "--XyZzy42" 'Content-Disposition: form-data; name="name"' "" "up"
    crlf "--XyZzy42" 'Content-Disposition: form-data; name="samples"' "" '["the cat", "a dog"]'
    crlf "--XyZzy42" 'Content-Disposition: form-data; name="file"; filename="lora.gguf"' "Content-Type: application/octet-stream" ""
    cat "$out/lora_gguf/lora.gguf"
    printf '\r\n'
    crlf "--XyZzy42--"
} >"$out/serve_body/route6"

rm -rf "$work"
touch "$out/.done"
