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
BLAS_CFLAGS := -I/usr/include/x86_64-linux-gnu/openblas-pthread

OPT = -O3 -march=native
SANFLAGS =
ifeq ($(SAN),1)
SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined
OPT = -O1 -g -march=native -fno-omit-frame-pointer $(SANFLAGS)
endif
CFLAGS = -std=c11 -D_DEFAULT_SOURCE $(OPT) -fno-math-errno -ffp-contract=fast -fopenmp-simd \
         -Wall -Wextra -Wshadow -Iinclude $(HDF5_CFLAGS) $(BLAS_CFLAGS) -MMD -MP
LDFLAGS = $(SANFLAGS)
LDLIBS = $(HDF5_LIBS) -lopenblas -lpcre2-8 -ljansson -lm

LIB_SRC := $(wildcard src/*.c)
CLI_SRC := $(wildcard src/cli/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
LIB := $(BUILD)/libgpt.a
GPT := $(BINDIR)/gpt
ORACLE := $(BUILD)/tests/oracle
KERNEL_BENCH := $(BUILD)/tools/kernel_bench
CKPT_BENCH := $(BUILD)/tools/ckpt_bench
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

# keep the unit tests' objects between builds
.SECONDARY:

.PHONY: all deps deb-deps test test-unit test-python test-slurm sanitize bench bench-ckpt bench-finetune bench-hybrid demo clean

all: $(GPT) $(ORACLE) $(UNIT_BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
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
# python3-pattern ships a real labelled CSV (Pang & Lee's polarity sentences) for tests/test_task.py.
DEB_PACKAGES = build-essential pkg-config libopenmpi-dev openmpi-bin libhdf5-openmpi-dev \
               hdf5-tools libopenblas-dev libpcre2-dev libjansson-dev libcmocka-dev \
               python3-torch python3-h5py python3-numpy python3-pytest gnuplot-nox \
               python3-pattern
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

test: all test-unit test-python

test-unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

test-python: $(GPT) $(ORACLE)
	GPT_BIN=$(abspath $(GPT)) ORACLE_BIN=$(abspath $(ORACLE)) $(PYTHON) -m pytest -q --ignore=tests/slurm tests

# jobs/pretrain.sbatch on a real single-node Slurm started for the test (root; needs
# slurm-wlm and munge, which this installs when missing).
SLURM_PACKAGES = slurm-wlm munge
test-slurm: $(GPT)
	@$(MAKE) --no-print-directory deb-deps DEB_PACKAGES="$(SLURM_PACKAGES)"
	GPT_BIN=$(abspath $(GPT)) $(PYTHON) -m pytest -q tests/slurm

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

demo: deps all
	bash tools/demo.sh

clean:
	rm -rf build build-san bin

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(BUILD)/tests/oracle.d $(BUILD)/tools/kernel_bench.d $(BUILD)/tools/ckpt_bench.d $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%.d)
