# tunsec: `make demo` runs a tunnel between two network namespaces,
# `make test` runs the whole test suite (both need root for namespaces).
PY ?= python3
CSRC := $(wildcard csrc/*.c)
CFLAGS_SAN := -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror -fsanitize=address,undefined \
              -fno-sanitize-recover=all -fno-omit-frame-pointer -Icsrc


.PHONY: deps build demo demo-manual test unit lint sanitize bench clean fuzz fuzz-smoke fuzz-build soak image pycache

.deps.stamp: scripts/install-deps.sh pyproject.toml setup.py $(CSRC) csrc/tunsec_dp.h csrc/tunsec_bench.h
	bash scripts/install-deps.sh
	touch $@

deps: .deps.stamp

build: .deps.stamp

demo: .deps.stamp
	bash scripts/demo.sh

demo-manual: .deps.stamp
	MODE=manual bash scripts/demo.sh

# localhost/tunsec:latest from docker/Dockerfile with podman (or docker); builds the base
# image from the Debian mirror when no registry is reachable (docker/build-image.sh)
image:
	bash docker/build-image.sh

# The suite runs on PYTEST_WORKERS pytest-xdist workers: most end-to-end and interop tests wait
# (rekeys, pings, charon) rather than compute, so more workers than cores pay.  loadgroup keeps
# each xdist_group on one worker; tests marked `serial` run alone (tests/README.md).
PYTEST_WORKERS ?= 4
PYTEST_PARALLEL = -n $(PYTEST_WORKERS) --dist loadgroup -p no:benchmark

# ASan/UBSan and TSan over the C fast path, ruff and mypy, the fuzz smoke run (these three side
# by side, each one's output kept together), then the full suite (unit, netns e2e, interop)
test: .deps.stamp
	$(MAKE) --no-print-directory -j3 --output-sync=target sanitize lint fuzz-smoke pycache
	$(PY) -m pytest -q $(PYTEST_PARALLEL) --durations=20

# Bytecode of the tunsec modules and of the test modules (pytest's assert-rewritten), compiled once before
# the xdist workers start, each of which would otherwise rewrite every test module itself (13.8 CPU-s of
# collection instead of 5.3); tests/conftest.py keeps the caches on, also where PYTHONDONTWRITEBYTECODE is set
pycache: .deps.stamp
	@mkdir -p build
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q --collect-only -p no:benchmark >build/pycache.log 2>&1 \
	  || { tail -n 60 build/pycache.log; exit 1; }
	$(PY) -m compileall -q src

unit: .deps.stamp
	$(PY) -m pytest -q -m "not netns and not interop"

lint: .deps.stamp
	$(PY) -m ruff check src tests bench fuzz
	$(PY) -m mypy

# the C self-test: one file per unit under test, main() in csrc/test/selftest.c
SELFTEST_SRC := $(wildcard csrc/test/*.c)
# allocation failures on demand (csrc/test/test_spd_oom.c): the fast path's realloc calls go
# through a wrapper that passes them on until a test arms it; its sendmmsg calls too, which counts
# the refused ones (csrc/test/test_addrwatch.c)
SELFTEST_LD := -Wl,--wrap=realloc -Wl,--wrap=sendmmsg

build/selftest: $(CSRC) csrc/tunsec_dp.h csrc/tunsec_bench.h csrc/internal.h csrc/limit.h csrc/srcroute.h $(SELFTEST_SRC) csrc/test/selftest.h
	mkdir -p build
	gcc $(CFLAGS_SAN) -o $@ $(CSRC) $(SELFTEST_SRC) $(SELFTEST_LD) -lcrypto -lpthread

build/selftest-tsan: $(CSRC) csrc/tunsec_dp.h csrc/tunsec_bench.h csrc/internal.h csrc/limit.h csrc/srcroute.h $(SELFTEST_SRC) csrc/test/selftest.h
	mkdir -p build
	gcc -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror -fsanitize=thread -Icsrc -o $@ \
	    $(CSRC) $(SELFTEST_SRC) $(SELFTEST_LD) -lcrypto -lpthread

# ASan/UBSan, then ThreadSanitizer over the loop threads sharing an SA
sanitize: build/selftest build/selftest-tsan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./build/selftest
	TSAN_OPTIONS=halt_on_error=1 ./build/selftest-tsan

# Coverage-guided fuzzing (fuzz/README.md): libFuzzer + ASan/UBSan over the C
# packet paths, atheris over the Python codecs.  `make fuzz` runs each target
# for FUZZ_SECONDS; `make fuzz-smoke` (part of `make test`) for FUZZ_SMOKE_SECONDS.
CLANG ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 6
FUZZ_C := esp_inbound esp_outbound tun_vnet gro
FUZZ_PY := ike_message pipe_codec
CFLAGS_FUZZ := -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror -fsanitize=address,undefined \
               -fno-sanitize-recover=all -fno-omit-frame-pointer -Icsrc
FUZZ_OBJ := $(patsubst csrc/%.c,build/fuzz/obj/%.o,$(CSRC))
.SECONDARY: $(FUZZ_OBJ)

build/fuzz/obj/%.o: csrc/%.c csrc/tunsec_dp.h csrc/tunsec_bench.h csrc/internal.h csrc/limit.h csrc/srcroute.h
	@mkdir -p build/fuzz/obj
	$(CLANG) $(CFLAGS_FUZZ) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/%: fuzz/%.c fuzz/fuzz_util.h $(FUZZ_OBJ)
	$(CLANG) $(CFLAGS_FUZZ) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) -lcrypto -lpthread

fuzz-build: $(addprefix build/fuzz/,$(FUZZ_C))

fuzz: .deps.stamp fuzz-build
	@for t in $(FUZZ_C) $(FUZZ_PY); do \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  PY=$(PY) bash fuzz/run.sh $$t $(FUZZ_SECONDS) || exit 1; \
	done

# one target per rule, so that `make -j` runs them side by side
FUZZ_SMOKE := $(addprefix fuzz-smoke-,$(FUZZ_C) $(FUZZ_PY))
.PHONY: $(FUZZ_SMOKE)
fuzz-smoke: $(FUZZ_SMOKE)

$(FUZZ_SMOKE): fuzz-smoke-%: .deps.stamp fuzz-build
	@echo "== fuzz $* for $(FUZZ_SMOKE_SECONDS) s"
	@PY=$(PY) bash fuzz/run.sh $* $(FUZZ_SMOKE_SECONDS) >build/fuzz/$*.log 2>&1 \
	  || { tail -n 60 build/fuzz/$*.log; exit 1; }
	@grep -h "^Done" build/fuzz/$*.log

bench: .deps.stamp
	$(PY) bench/run.py --seconds 10 --runs 3 --json bench/results.json --png bench/results.png
	$(PY) -m pytest -q bench --benchmark-only

# not in CI: two tunsec IKE peers rekeying every few seconds with `status` polled, for
# SOAK_SECONDS; prints the RSS and descriptor slopes of both control processes and workers
SOAK_SECONDS ?= 600
soak: .deps.stamp
	$(PY) bench/soak.py --seconds $(SOAK_SECONDS)

clean:
	rm -rf build .deps.stamp src/tunsec/dataplane/_fastpath*.so src/tunsec/bench/_cbench*.so
