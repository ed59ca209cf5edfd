# The two commands of the Quickstart: `make demo` and `make test`. Both install what is
# missing (Debian packages), configure, build what they run, then run it.
BUILD_DIR ?= build
JOBS ?= 2
CMAKE_FLAGS ?=
export OMP_NUM_THREADS ?= 2

.PHONY: all deps configure build test demo clean

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

# Only the `iisan` binary: the tests and benchmarks are not built for the demo.
demo: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target iisan
	$(BUILD_DIR)/iisan demo --workdir runs/demo

clean:
	rm -rf $(BUILD_DIR)
