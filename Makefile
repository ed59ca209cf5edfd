# The two commands of the Quickstart: `make demo` and `make test`. Both install what is
# missing (Debian packages), configure, build what they run, then run it.
BUILD_DIR ?= build
JOBS ?= 2
CMAKE_FLAGS ?=
export OMP_NUM_THREADS ?= 2

.PHONY: all deps configure build test demo sanitize clean

all: build

deps:
	./scripts/install-deps

# The configure step reruns (from a fresh CMake cache) whenever CMAKE_FLAGS differ from the
# flags the build folder was configured with; the stamp is rewritten only when they change.
FLAGS_STAMP := $(BUILD_DIR)/cmake-flags.txt
$(shell mkdir -p $(BUILD_DIR) && (echo '$(CMAKE_FLAGS)' | cmp -s - $(FLAGS_STAMP) || echo '$(CMAKE_FLAGS)' > $(FLAGS_STAMP)))

$(BUILD_DIR)/build.ninja: $(FLAGS_STAMP)
	cmake --fresh -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900

# The test suites built with AddressSanitizer and UndefinedBehaviorSanitizer (IISAN_SANITIZE)
# in their own folder, and run. Not part of `make test`: on 2 cores the build and the run take
# about 70 minutes. LibTorch, HDF5 and Open MPI are not instrumented; README "Sanitizers" says
# what the options and the exclusions below are for.
SANITIZE_DIR ?= build-sanitize
SANITIZE_ENV := ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:strict_init_order=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	OMPI_MCA_memory=^patcher
SANITIZE_EXCLUDE ?= -LE slurm

sanitize: deps
	cmake -S . -B $(SANITIZE_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIISAN_SANITIZE=ON $(CMAKE_FLAGS)
	$(SANITIZE_ENV) cmake --build $(SANITIZE_DIR) -j $(JOBS) --target iisan_tests
	cd $(SANITIZE_DIR) && $(SANITIZE_ENV) ctest --output-on-failure -j $(JOBS) --timeout 3600 $(SANITIZE_EXCLUDE)

# Only the `iisan` binary: the tests and benchmarks are not built for the demo.
demo: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target iisan
	$(BUILD_DIR)/iisan demo --workdir runs/demo

clean:
	rm -rf $(BUILD_DIR)
