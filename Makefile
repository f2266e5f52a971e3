# tunsec: `make demo` runs a tunnel between two network namespaces,
# `make test` runs the whole test suite (both need root for namespaces).
PY ?= python3
CSRC := $(wildcard csrc/*.c)
CFLAGS_SAN := -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror -fsanitize=address,undefined \
              -fno-sanitize-recover=all -fno-omit-frame-pointer -Icsrc


.PHONY: deps build demo demo-manual test unit lint sanitize bench clean soak

.deps.stamp: scripts/install-deps.sh pyproject.toml setup.py $(CSRC) csrc/tunsec_dp.h
	bash scripts/install-deps.sh
	touch $@

deps: .deps.stamp

build: .deps.stamp

demo: .deps.stamp
	bash scripts/demo.sh

demo-manual: .deps.stamp
	MODE=manual bash scripts/demo.sh

# ASan/UBSan and TSan over the C fast path, ruff and mypy, then the full suite (unit, netns e2e, interop)
test: .deps.stamp sanitize lint
	$(PY) -m pytest -q

unit: .deps.stamp
	$(PY) -m pytest -q -m "not netns and not interop"

lint: .deps.stamp
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy

build/selftest: $(CSRC) csrc/tunsec_dp.h csrc/internal.h csrc/test/selftest.c
	mkdir -p build
	gcc $(CFLAGS_SAN) -o $@ $(CSRC) csrc/test/selftest.c -lcrypto -lpthread

build/selftest-tsan: $(CSRC) csrc/tunsec_dp.h csrc/internal.h csrc/test/selftest.c
	mkdir -p build
	gcc -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror -fsanitize=thread -Icsrc -o $@ \
	    $(CSRC) csrc/test/selftest.c -lcrypto -lpthread

# ASan/UBSan, then ThreadSanitizer over the loop threads sharing an SA
sanitize: build/selftest build/selftest-tsan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./build/selftest
	TSAN_OPTIONS=halt_on_error=1 ./build/selftest-tsan

bench: .deps.stamp
	$(PY) bench/run.py --seconds 10 --runs 3 --json bench/results.json --png bench/results.png
	$(PY) -m pytest -q bench --benchmark-only

# not in CI: two tunsec IKE peers rekeying every few seconds with `status` polled, for
# SOAK_SECONDS; prints the RSS and descriptor slopes of both control processes and workers
SOAK_SECONDS ?= 600
soak: .deps.stamp
	$(PY) bench/soak.py --seconds $(SOAK_SECONDS)

clean:
	rm -rf build .deps.stamp src/tunsec/dataplane/_fastpath*.so
