# The two commands of the Quickstart: `make demo` and `make test`. Both install what is
# missing (Debian packages), configure, build, then run.
BUILD_DIR ?= build
JOBS ?= 2
CMAKE_FLAGS ?=
export OMP_NUM_THREADS ?= 2

.PHONY: all deps configure build test demo clean

all: build

deps:
	./scripts/install-deps

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900

demo: build
	$(BUILD_DIR)/iisan demo --workdir runs/demo

clean:
	rm -rf $(BUILD_DIR)
