# ramole — build, test, bench, install.
#   make            optimized library + CLI in build/
#   make test       unit/integration tests, optimized, then under ASan+UBSan
#   make bench      benchmarks (tables on stdout)
#   make install PREFIX=/usr/local
#   make fuzz       libFuzzer harnesses (clang) in build-fuzz/; make fuzz-smoke runs each briefly
CC      ?= gcc
PREFIX  ?= /usr/local
WARN     = -Wall -Wextra -Werror -Wno-unused-parameter
CSTD     = -std=gnu11
# Only what include/ramole.h marks RM_API is exported from libramole.so.
VIS      = -fvisibility=hidden
INC      = -Iinclude -Isrc -Itools -Ifuzz $(shell pkg-config --cflags libpq)
OPT      = -O2 -g -fno-omit-frame-pointer -fPIC
LIBS     = -lm -lpthread -lsqlite3 -lpcre2-8 -lutf8proc -lmicrohttpd $(shell pkg-config --libs libpq)

# Kernels for one ISA live in files named *_avx2.c / *_avx512.c and are only
# called after a run-time CPUID check (src/base/cpu.c).
AVX2_FLAGS   = -mavx2 -mfma -mf16c
AVX512_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c
# *_avx512bf16.c: AVX-512 with the bf16 dot products (vdpbf16ps), checked apart
AVX512BF16_FLAGS = $(AVX512_FLAGS) -mavx512bf16

SRC_LIB   = $(sort $(wildcard src/*/*.c))
SRC_TOOLS = $(sort $(wildcard tools/*.c))
SRC_TESTS = $(sort $(wildcard tests/*.c)) fuzz/targets.c
SRC_BENCH = $(sort $(wildcard bench/*.c))
# The page of `ramole serve` (GET /), built into the library as a generated C
# source (scripts/embed_files.c writes it).
WEB_FILES = src/serve/web/index.html src/serve/web/app.js src/serve/web/app.css src/serve/web/favicon.svg

# $(call objs,BUILDDIR,SOURCES)
objs = $(patsubst %.c,$(1)/%.o,$(2))

comma := ,
VERSION := $(shell sed -n 's/^\#define RM_VERSION "\(.*\)"/\1/p' include/ramole.h)
B  ?= build
SAN ?= build-san

.PHONY: all test test-opt test-san bench install clean run fuzz fuzz-smoke fuzz-lib
all: $(B)/ramole $(B)/libramole.a $(B)/libramole.so

define build_rules
$(1)/%_avx2.o: %_avx2.c
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CSTD) $$(VIS) $$(WARN) $$(INC) $(2) $$(AVX2_FLAGS) $$(KERNEL_OPT) -MMD -c $$< -o $$@
$(1)/%_avx512.o: %_avx512.c
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CSTD) $$(VIS) $$(WARN) $$(INC) $(2) $$(AVX512_FLAGS) $$(KERNEL_OPT) -MMD -c $$< -o $$@
$(1)/%_avx512bf16.o: %_avx512bf16.c
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CSTD) $$(VIS) $$(WARN) $$(INC) $(2) $$(AVX512BF16_FLAGS) $$(KERNEL_OPT) -MMD -c $$< -o $$@
$(1)/%.o: %.c
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CSTD) $$(VIS) $$(WARN) $$(INC) $(2) -MMD -c $$< -o $$@
$(1)/gen/embed_files: scripts/embed_files.c
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CSTD) $$(WARN) -O1 -o $$@ $$<
$(1)/gen/web.c: $(1)/gen/embed_files $(WEB_FILES)
	$(1)/gen/embed_files $(WEB_FILES) > $$@.tmp
	mv $$@.tmp $$@
$(1)/gen/web.o: $(1)/gen/web.c src/serve/web.h
	$$(CC) $$(CSTD) $$(VIS) $$(WARN) $$(INC) $(2) -c $$< -o $$@
$(1)/libramole.a: $(call objs,$(1),$(SRC_LIB)) $(1)/gen/web.o
	@rm -f $$@
	ar rcs $$@ $$^
$(1)/ramole: $(call objs,$(1),$(SRC_TOOLS)) $(1)/libramole.a
	$$(CC) $(2) -o $$@ $(call objs,$(1),$(SRC_TOOLS)) $(1)/libramole.a $$(LIBS) $(3)
$(1)/ramole-tests: $(call objs,$(1),$(SRC_TESTS)) $(1)/libramole.a
	$$(CC) $(2) -o $$@ $(call objs,$(1),$(SRC_TESTS)) $(1)/libramole.a $$(LIBS) $(3)
$(1)/ramole-bench: $(call objs,$(1),$(SRC_BENCH)) $(1)/libramole.a
	$$(CC) $(2) -o $$@ $(call objs,$(1),$(SRC_BENCH)) $(1)/libramole.a $$(LIBS) $(3)
-include $(patsubst %.c,$(1)/%.d,$(SRC_LIB) $(SRC_TOOLS) $(SRC_TESTS) $(SRC_BENCH))
endef

$(eval $(call build_rules,$(B),$(OPT),))
$(eval $(call build_rules,$(SAN),-O1 -g -fno-omit-frame-pointer -fsanitize=address$(comma)undefined -fno-sanitize-recover=undefined,-fsanitize=address$(comma)undefined))

$(B)/libramole.so: $(call objs,$(B),$(SRC_LIB)) $(B)/gen/web.o
	$(CC) -shared -o $@ $^ $(LIBS)

# Tests run from the repo root so that ../shared resolves; they skip with a
# message when ../shared is absent.
test: test-opt test-san
test-opt: $(B)/ramole-tests $(B)/ramole
	RAMOLE_BIN=$(B)/ramole ./$(B)/ramole-tests $(T)
test-san: $(SAN)/ramole-tests $(SAN)/ramole
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	RAMOLE_BIN=$(SAN)/ramole RAMOLE_SANITIZED=1 ./$(SAN)/ramole-tests $(T)

bench: $(B)/ramole $(B)/ramole-bench
	./$(B)/ramole-bench $(BENCH_ARGS)

# The main job on a bundled default: train a small byte-level Llama on the
# project's own docs (about 40 s on 2 cores), then generate from it.
DEMO_TEXT = README.md $(sort $(wildcard docs/*.md))
$(B)/demo.gguf: $(B)/ramole scripts/demo-model.json $(DEMO_TEXT)
	cat $(DEMO_TEXT) > $(B)/demo-corpus.txt
	./$(B)/ramole train --config scripts/demo-model.json --data $(B)/demo-corpus.txt --out $@
run: $(B)/demo.gguf
	./$(B)/ramole generate -m $(B)/demo.gguf -p "ramole is" -n 200 --temp 0.7 --seed 2

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(B)/ramole $(DESTDIR)$(PREFIX)/bin/ramole
	install -m 644 $(B)/libramole.a $(DESTDIR)$(PREFIX)/lib/libramole.a
	install -m 755 $(B)/libramole.so $(DESTDIR)$(PREFIX)/lib/libramole.so
	install -m 644 include/ramole.h $(DESTDIR)$(PREFIX)/include/ramole.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' scripts/ramole.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/ramole.pc

# Fuzzing (fuzz/README.md): the library rebuilt by clang with libFuzzer's
# coverage and ASan+UBSan; one binary per target of fuzz/targets.c. The
# per-ISA kernel files (*_avx2.c, *_avx512.c) leave UBSan out there
# (KERNEL_OPT): clang's UBSan takes minutes on their unrolled tiles (220 s for
# matmul_avx512.c alone, 15 s without), the fuzz targets parse files and
# barely reach them, and `make test-san` runs them under UBSan anyway.
FUZZ_CC    ?= clang
FUZZB      ?= build-fuzz
FUZZ_FLAGS  = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_TARGETS = json gguf lora_gguf safetensors peft tokenizer_json tokenize llama2c http serve_body
FUZZ_BINS   = $(patsubst %,$(FUZZB)/fuzz_%,$(FUZZ_TARGETS))
FUZZ_SECS  ?= 20
fuzz-lib:
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz needs $(FUZZ_CC) and libFuzzer: scripts/deps.sh fuzz (as root)" >&2; exit 1; }
	$(MAKE) --no-print-directory CC=$(FUZZ_CC) B=$(FUZZB) OPT="$(FUZZ_FLAGS) -fsanitize=fuzzer-no-link" \
	    KERNEL_OPT="-fno-sanitize=undefined" $(FUZZB)/libramole.a
$(FUZZB)/fuzz_%: fuzz/driver.c fuzz/targets.c fuzz/targets.h fuzz-lib
	$(FUZZ_CC) $(CSTD) $(WARN) $(INC) $(FUZZ_FLAGS) -fsanitize=fuzzer -DRM_FUZZ_TARGET=$* -o $@ \
	    fuzz/driver.c fuzz/targets.c $(FUZZB)/libramole.a $(LIBS)
fuzz: $(FUZZ_BINS)
fuzz-smoke: fuzz $(B)/ramole
	RAMOLE_BIN=$(B)/ramole ./fuzz/run.sh -t $(FUZZ_SECS) $(FUZZ_BINS)

clean:
	rm -rf build build-san build-fuzz
