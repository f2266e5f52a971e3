#!/usr/bin/env bash
# Run one fuzz target for a bounded time over its committed corpus.
#   fuzz/run.sh TARGET SECONDS
# The committed seeds in fuzz/corpus/TARGET/ are replayed first (regressions),
# then the fuzzer mutates for SECONDS.  New interesting inputs go to a
# temporary directory (printed, kept only if FUZZ_KEEP_NEW=1), never into the
# repository; a crash is written to build/fuzz/artifacts/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$1
seconds=$2
PY=${PY:-python3}
mkdir -p build/fuzz/artifacts
new=$(mktemp -d "${TMPDIR:-/tmp}/tunsec-fuzz-$target.XXXXXX")
cleanup() { [ "${FUZZ_KEEP_NEW:-0}" = 1 ] && echo "new inputs of $target kept in $new" || rm -rf "$new"; }
trap cleanup EXIT

# per-target input size limit: big enough for the largest packet a path takes
case $target in
  tun_vnet) max_len=66000 ;;
  esp_inbound | gro) max_len=16384 ;;
  *) max_len=4096 ;;
esac
flags=(-max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048
       -artifact_prefix="build/fuzz/artifacts/$target-" -print_final_stats=1)

if [ -f "fuzz/$target.py" ]; then
  # atheris: the package comes from this checkout (src/), not an installed copy
  PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" \
    $PY "fuzz/$target.py" "${flags[@]}" "$new" "fuzz/corpus/$target"
else
  ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "build/fuzz/$target" "${flags[@]}" "$new" "fuzz/corpus/$target"
fi
