# GPT pretraining tool: library build/libgpt.a, executable bin/gpt, tests, benchmarks.
# `make SAN=1 BUILD=build-san` (what `make sanitize` runs) builds everything with
# AddressSanitizer and UBSan into a separate tree.

BUILD ?= build
BINDIR ?= bin
PYTHON ?= /usr/bin/python3

CC = gcc
# Asked of pkg-config when a recipe first needs them, not when the Makefile is read: in
# `make demo` on a fresh machine the `deps` prerequisite installs HDF5 first.
pkg = $(or $(shell pkg-config $(1) hdf5-openmpi 2>/dev/null),$(error pkg-config knows no hdf5-openmpi: run `make deps` (or install libhdf5-openmpi-dev)))
HDF5_CFLAGS = $(eval HDF5_CFLAGS := $(call pkg,--cflags))$(HDF5_CFLAGS)
HDF5_LIBS = $(eval HDF5_LIBS := $(call pkg,--libs))$(HDF5_LIBS)
# OpenBLAS's OpenMP build, so that sgemm and our OpenMP kernels share one team of
# threads (the pthread build keeps a second pool whose threads spin beside ours).
# Linked by path with an rpath: Debian's alternatives keep pointing other programs
# (PyTorch) at the pthread build. BLAS_VARIANT=pthread builds the other for comparison.
BLAS_VARIANT ?= openmp
BLAS_CFLAGS := -I/usr/include/x86_64-linux-gnu/openblas-$(BLAS_VARIANT)
BLAS_LIBDIR := /usr/lib/x86_64-linux-gnu/openblas-$(BLAS_VARIANT)
BLAS_LIBS := -L$(BLAS_LIBDIR) -Wl,-rpath,$(BLAS_LIBDIR) -lopenblas

# The binary runs on any x86-64-v3 CPU (AVX2 + FMA). The kernels are built for both
# AVX2 and AVX-512 and chosen when the program starts (include/cpu/kernels.h); NATIVE=1
# builds the rest for this machine's CPU only (the binary may not run elsewhere).
ARCH = -march=x86-64-v3 -mtune=generic
KERNEL_TUNE = -mtune=generic
ifeq ($(NATIVE),1)
ARCH = -march=native
KERNEL_TUNE = -mtune=native
endif
KERNEL_FLAGS_avx2 = -march=x86-64-v3 $(KERNEL_TUNE)
KERNEL_FLAGS_avx512 = -march=x86-64-v4 $(KERNEL_TUNE) -mprefer-vector-width=512

OPT = -O3
SANFLAGS =
ifeq ($(SAN),1)
SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined
OPT = -O1 -g -fno-omit-frame-pointer $(SANFLAGS)
endif
# -fno-trapping-math: without it GCC keeps the clamps of the exp polynomial as branches
# and leaves those loops scalar on AVX2 (we never enable floating-point traps).
FPFLAGS = -fno-math-errno -fno-trapping-math -ffp-contract=fast -fopenmp
CFLAGS = -std=c11 -D_DEFAULT_SOURCE $(OPT) $(ARCH) $(FPFLAGS) \
         -Wall -Wextra -Wshadow -Iinclude $(HDF5_CFLAGS) $(BLAS_CFLAGS) -MMD -MP
LDFLAGS = $(SANFLAGS) -fopenmp
LDLIBS = $(HDF5_LIBS) $(BLAS_LIBS) -ldnnl -lpcre2-8 -ljansson -lz -lzstd -lm

# src/LAYER/*.c, one folder per layer (docs/architecture.md); src/cli is the executable
LIB_SRC := $(filter-out src/cpu/kernels.c,$(filter-out src/cli/%,$(wildcard src/*/*.c)))
KERNEL_SETS := avx2 avx512
CLI_SRC := $(wildcard src/cli/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
KERNEL_OBJ := $(KERNEL_SETS:%=$(BUILD)/src/cpu/kernels_%.o)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o) $(KERNEL_OBJ)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
LIB := $(BUILD)/libgpt.a
GPT := $(BINDIR)/gpt
ORACLE := $(BUILD)/tests/oracle
KERNEL_BENCH := $(BUILD)/tools/kernel_bench
CKPT_BENCH := $(BUILD)/tools/ckpt_bench
GATHER_BENCH := $(BUILD)/tools/gather_bench
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

# keep the unit tests' objects between builds
.SECONDARY:

.PHONY: all deps deb-deps check-layers test test-unit test-python test-slurm test-cluster sanitize bench bench-ckpt bench-finetune bench-hybrid bench-choice bench-interop bench-prepare bench-cluster bench-zero bench-plan bench-precision demo clean

all: $(GPT) $(ORACLE) $(UNIT_BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# src/cpu/kernels.c once per kernel set, ARCH replaced by the set's own flags
$(KERNEL_OBJ): $(BUILD)/src/cpu/kernels_%.o: src/cpu/kernels.c
	@mkdir -p $(dir $@)
	$(CC) $(filter-out $(ARCH),$(CFLAGS)) $(KERNEL_FLAGS_$*) -DKERNEL_ISA=$* -c $< -o $@

# rebuilt from scratch: `ar r` keeps members whose source is gone (an old kernels.o)
$(LIB): $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(GPT): $(CLI_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(ORACLE): $(BUILD)/tests/oracle.o $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tools/%: $(BUILD)/tools/%.o $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/test_%: $(BUILD)/tests/unit/test_%.o $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS) -lcmocka

# Debian packages the build, the tests and the benchmarks need; installs only what is missing.
# python3-pattern ships a real labelled CSV (Pang & Lee's polarity sentences) for tests/test_task.py;
# bsdgames the verse quizzes that tools/quiz_choice.py turns into multiple-choice records (docs/evaluation.md);
# libdnnl-dev oneDNN, whose matmul runs --precision bf16 on AMX (include/cpu/precision.h).
DEB_PACKAGES = build-essential pkg-config libopenmpi-dev openmpi-bin libhdf5-openmpi-dev \
               hdf5-tools libopenblas-dev libopenblas-openmp-dev libdnnl-dev libpcre2-dev libjansson-dev libcmocka-dev \
               zlib1g-dev libzstd-dev zstd \
               python3-torch python3-h5py python3-numpy python3-pytest gnuplot-nox \
               python3-pattern qemu-user bsdgames
# The JavaScript reference tokenizers and test data, pinned by tests/js/package-lock.json.
deps: deb-deps
	@command -v npm >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm; }
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error

deb-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "all Debian packages present"; fi

# The layer rule of docs/architecture.md: no source includes a header of a higher or sibling layer.
check-layers:
	$(PYTHON) tools/check_layers.py

test: check-layers all test-unit test-python

test-unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

# Under SAN=1, tests/test_portable.py is left out: an ASan binary under qemu-user runs
# thousands of times slower than natively (make test runs it on the real binary). So is
# the test that the small model learns Moby Dick: 90 s of training at -O1 under ASan,
# through the code the shorter training tests run, for a property of the numbers that
# the plain run checks. And gpt plan's memory against gpt train's peak: ASan's shadow
# memory and quarantine are part of a sanitized process's peak, not of the model.
PYTEST_IGNORE = --ignore=tests/slurm --ignore=tests/cluster $(if $(filter 1,$(SAN)),--ignore=tests/test_portable.py \
                --deselect tests/test_train.py::test_small_model_learns_moby_dick \
                --deselect tests/test_plan.py::test_memory_a_rank_against_gpt_train)
test-python: $(GPT) $(ORACLE)
	GPT_BIN=$(abspath $(GPT)) ORACLE_BIN=$(abspath $(ORACLE)) $(PYTHON) -m pytest -q $(PYTEST_IGNORE) tests

# jobs/pretrain.sbatch on a real single-node Slurm started for the test (root; needs
# slurm-wlm and munge, which this installs when missing).
SLURM_PACKAGES = slurm-wlm munge
test-slurm: $(GPT)
	@$(MAKE) --no-print-directory deb-deps DEB_PACKAGES="$(SLURM_PACKAGES)"
	GPT_BIN=$(abspath $(GPT)) $(PYTHON) -m pytest -q tests/slurm

# The multi-host tests on a cluster of network namespaces made for the test, with a
# Slurm of 2 nodes on it (root; iproute2, slurm-wlm and munge, installed when missing).
CLUSTER_PACKAGES = iproute2 $(SLURM_PACKAGES)
test-cluster: $(GPT)
	@$(MAKE) --no-print-directory deb-deps DEB_PACKAGES="$(CLUSTER_PACKAGES)"
	GPT_BIN=$(abspath $(GPT)) $(PYTHON) -m pytest -q tests/cluster

bench-cluster: $(GPT) $(GATHER_BENCH)
	$(PYTHON) tools/bench_cluster.py

bench-zero: $(GPT)
	$(PYTHON) tools/bench_zero.py

bench-plan: $(GPT)
	$(PYTHON) tools/bench_plan.py

bench-precision: $(GPT)
	$(PYTHON) tools/bench_precision.py

sanitize:
	$(MAKE) SAN=1 BUILD=build-san BINDIR=build-san/bin test

bench: $(GPT) $(KERNEL_BENCH)
	$(PYTHON) tools/bench.py

bench-ckpt: $(GPT) $(CKPT_BENCH)
	$(PYTHON) tools/bench_ckpt.py

bench-finetune: $(GPT)
	$(PYTHON) tools/bench_finetune.py

bench-hybrid: $(GPT)
	$(PYTHON) tools/bench_hybrid.py

bench-choice: $(GPT)
	$(PYTHON) tools/bench_choice.py

bench-interop: $(GPT)
	$(PYTHON) tools/bench_interop.py

bench-prepare: $(GPT)
	$(PYTHON) tools/bench_prepare.py

demo: deps all
	bash tools/demo.sh

clean:
	rm -rf build build-san bin

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(BUILD)/tests/oracle.d $(BUILD)/tools/kernel_bench.d $(BUILD)/tools/ckpt_bench.d $(BUILD)/tools/gather_bench.d $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%.d)
