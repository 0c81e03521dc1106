#!/bin/sh
# llamacpp-lora.sh [DIR] — builds bench/llamacpp/lora_requests.c (llama.cpp's side of
# `ramole bench-lora --compare llamacpp`) as DIR/lbl, against the llama.cpp headers and prebuilt
# libraries that ../shared/tools/llamacpp-bench/build.sh fetched into DIR (default
# ~/.cache/ramole-llamacpp-bench; run that script first).
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/ramole-llamacpp-bench}
lib="$out/bins/package/bins/linux-x64"
if [ ! -d "$out/llamasrc/include" ] || [ ! -d "$lib" ]; then
    echo "llamacpp-lora: no llama.cpp in $out; run ../shared/tools/llamacpp-bench/build.sh first" >&2
    exit 1
fi
gcc -O2 -Wall -o "$out/lbl" "$here/bench/llamacpp/lora_requests.c" -I "$out/llamasrc/include" \
    -I "$out/llamasrc/ggml/include" -L "$lib" -l:libllama.v0.4.0.so -l:libggml.v0.4.0.so -l:libggml-base.so \
    -Wl,-rpath,"$lib"
echo "$out/lbl"
