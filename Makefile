# umdev: the two commands a newcomer needs (as root on Debian 12).
#   make run   installs what is missing, builds, runs umdevd with the embedded config,
#              creates an mtty instance and prints the QEMU command that attaches it
#   make test  installs what is missing, builds, builds (once, cached outside the
#              repository) the QEMU root the end-to-end tests run, runs every
#              test, then the unit tests and the daemon end to end under
#              ASan+UBSan, the concurrency tests under TSan, and each libFuzzer
#              target for a short fixed budget
SHELL := /bin/bash
JOBS ?= $(shell nproc)
# ccache keeps its cache outside the repository, shared by all build trees.
# Paths are hashed relative to the checkout, so that a fresh clone in another
# folder (CI's) hits what an earlier one compiled.
export CCACHE_DIR ?= $(HOME)/.cache/ccache
export CCACHE_BASEDIR ?= $(CURDIR)
export CCACHE_NOHASHDIR ?= 1
# Unity builds compile each module's and test's sources in batches, so that
# the heavy headers (gtest, nlohmann/json, spdlog) are parsed and their
# templates instantiated once per batch instead of once per file: on a
# clean machine's 2 cores, compiling dominates `make test`.
CONFIGURE := cmake -G Ninja -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DUMDEV_WERROR=ON \
  -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=8
# Line tables only (-g1): backtraces and sanitizer reports keep file and
# line, and the optimized builds compile a quarter faster than with -g.
OPTIMIZED := -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
CTEST := ctest -j$(JOBS) --output-on-failure --timeout 600

# Seconds each fuzz target runs: `make fuzz` (FUZZ_SECONDS) and inside
# `make test` (FUZZ_TEST_SECONDS, short so that CI stays within its time).
FUZZ_SECONDS ?= 300
FUZZ_TEST_SECONDS ?= 20
# Rounds of each kill in `make soak` (the regular pass runs 3).
SOAK_ROUNDS ?= 100

.PHONY: all setup build qemu-root run test test-regular test-asan test-tsan test-fuzz fuzz soak \
        bench deb debian-root clean

all: build

setup:
	bash scripts/setup

# Prefix /usr: the package is made from this tree (make deb), so that no
# target is compiled twice.
build: setup
	$(CONFIGURE) -S . -B build $(OPTIMIZED) -DCMAKE_INSTALL_PREFIX=/usr
	cmake --build build -j$(JOBS)

# A Debian trixie root with a QEMU that has the vfio-user-pci client; built once
# and cached (scripts/qemu-root --help says where). Only the tests use it.
qemu-root: setup
	bash scripts/qemu-root

# A Debian 12 root with the package's runtime libraries, for the package test;
# built once and cached like the QEMU root.
debian-root: setup
	bash scripts/debian-root

# Starts umdevd (embedded config: the mtty parent) in ./.umdev, creates one
# mtty-1 instance and prints the QEMU command that attaches it; Ctrl-C stops it.
run: build
	bash scripts/run --state-dir ./.umdev

test: test-regular test-asan test-tsan test-fuzz

# The end-to-end tests find QEMU through UMDEV_QEMU_ROOT; the sanitizer passes
# run no QEMU and do not need it.
test-regular: build qemu-root deb debian-root
	root="$$(bash scripts/qemu-root --print-path)" && \
	  debian_root="$$(bash scripts/debian-root --print-path)" && \
	  deb="$$(ls $(CURDIR)/build/umdev_*.deb)" && cd build && \
	  UMDEV_QEMU_ROOT="$$root" UMDEV_DEBIAN_ROOT="$$debian_root" UMDEV_DEB="$$deb" $(CTEST)

# Sanitizer passes build only the test executables their label selects. The
# ASan pass also runs the real daemon end to end (label asan_e2e: hostile
# clients and kills against an ASan umdevd, QEMU included).
test-asan: setup qemu-root
	$(CONFIGURE) -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-g1 \
	  -DUMDEV_SANITIZE=address \
	  -DUMDEV_BUILD_BENCHMARKS=OFF
	cmake --build build-asan -j$(JOBS) --target unit_tests asan_e2e_tests
	root="$$(bash scripts/qemu-root --print-path)" && cd build-asan && \
	  UMDEV_QEMU_ROOT="$$root" ASAN_OPTIONS=handle_sigbus=0 $(CTEST) -L 'unit|asan_e2e'

test-tsan: setup
	$(CONFIGURE) -S . -B build-tsan $(OPTIMIZED) -DUMDEV_SANITIZE=thread \
	  -DUMDEV_BUILD_BENCHMARKS=OFF
	cmake --build build-tsan -j$(JOBS) --target concurrency_tests
	cd build-tsan && $(CTEST) -L concurrency

# libFuzzer targets (clang-16, ASan+UBSan): a short fixed budget each here,
# FUZZ_SECONDS each in `make fuzz`. scripts/fuzz prints execs and coverage.
test-fuzz: setup
	bash scripts/fuzz $(FUZZ_TEST_SECONDS)

fuzz: setup
	bash scripts/fuzz $(FUZZ_SECONDS)

# The kill tests for SOAK_ROUNDS rounds each (QEMU mid-DMA, a migration client
# mid-stream, umdevd mid-define).
soak: build qemu-root
	root="$$(bash scripts/qemu-root --print-path)" && cd build && \
	  UMDEV_QEMU_ROOT="$$root" UMDEV_SOAK_ROUNDS=$(SOAK_ROUNDS) ./tests/kill_soak_test

# Benchmarks print their figures as ratios to a floor measured in the same run
# (docs/*-benchmark.md; gpu_slice_bench: docs/gpu.md). The QEMU cases of
# vfio_user_bench need the QEMU root.
bench: build qemu-root
	./build/bench/pinning_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
	root="$$(bash scripts/qemu-root --print-path)" && UMDEV_QEMU_ROOT="$$root" \
	  ./build/bench/vfio_user_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
	./build/bench/gpu_slice_bench
	root="$$(bash scripts/qemu-root --print-path)" && UMDEV_QEMU_ROOT="$$root" \
	  ./build/bench/gpu_doorbell_bench
	./build/bench/scale_bench

# The Debian package, build/umdev_VERSION_ARCH.deb (docs/service.md): CPack
# over the install rules of the tree the tests run, so the package holds the
# binaries they tested.
deb: build
	cd build && rm -f umdev_*.deb && cpack -G DEB

clean:
	rm -rf build build-asan build-tsan build-fuzz
