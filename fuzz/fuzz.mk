# Coverage-guided fuzzing of the C decoders: libFuzzer with ASan + UBSan, clang from Debian
# (apt-get install clang-14 libclang-rt-14-dev llvm-14). Included by the Makefile; works on its
# own too: make -f fuzz/fuzz.mk fuzz-ci. See fuzz/README.md.

FUZZ_CC ?= clang-14
FUZZ_OUT ?= build/fuzz
FUZZ_RUNS ?= 1000000
FUZZ_SEED ?= 1
FUZZ_SECONDS ?= 600
FUZZ_TARGETS := stats identify stats_struct render
FUZZ_WARN := -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -Icsrc
FUZZ_CFLAGS := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(FUZZ_WARN)
# Source-based coverage, no sanitizers: what the seeds alone reach in csrc/nvme_ebs.c.
FUZZ_COV_CFLAGS := -g -O0 -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping $(FUZZ_WARN)
FUZZ_DEPS := fuzz/reference.h csrc/nvme_ebs.c csrc/render.c csrc/nvme_ebs.h fuzz/fuzz.mk

.PHONY: fuzz-build fuzz-ci fuzz fuzz-coverage fuzz-corpus

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_OUT)/fuzz_%) ## build the libFuzzer targets (ASan + UBSan) in build/fuzz/

fuzz-ci: fuzz-build ## bounded fuzzing as CI runs it: FUZZ_RUNS (1000000) runs per target, fixed seed
	FUZZ_OUT='$(FUZZ_OUT)' FUZZ_RUNS='$(FUZZ_RUNS)' FUZZ_SEED='$(FUZZ_SEED)' bash fuzz/run.sh ci $(FUZZ_TARGETS)

fuzz: fuzz-build ## long local fuzzing: FUZZ_SECONDS (600) per target, corpus kept in build/fuzz/corpus/
	FUZZ_OUT='$(FUZZ_OUT)' FUZZ_SECONDS='$(FUZZ_SECONDS)' bash fuzz/run.sh long $(FUZZ_TARGETS)

fuzz-coverage: $(FUZZ_OUT)/cov/fuzz_stats $(FUZZ_OUT)/cov/fuzz_identify ## line/branch coverage of the decoders by the seeds
	FUZZ_OUT='$(FUZZ_OUT)' bash fuzz/run.sh coverage stats identify

fuzz-corpus: ## regenerate the seed corpus fuzz/corpus/ with fuzz/make_corpus.py
	$(or $(PY),python3) fuzz/make_corpus.py

$(FUZZ_OUT)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_DEPS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< csrc/nvme_ebs.c csrc/render.c -lm

$(FUZZ_OUT)/cov/fuzz_%: fuzz/fuzz_%.c $(FUZZ_DEPS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_COV_CFLAGS) -o $@ $< csrc/nvme_ebs.c

# fuzz_stats with one macro defined, e.g. build/fuzz/variant/FUZZ_SELFTEST_ASAN/fuzz_stats:
# the deliberately broken builds tests/test_fuzz.py runs to prove the sanitizers are live.
$(FUZZ_OUT)/variant/%/fuzz_stats: fuzz/fuzz_stats.c $(FUZZ_DEPS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -D$* -o $@ $< csrc/nvme_ebs.c
