#!/usr/bin/env bash
# On a GPU machine with torch preinstalled: build mlperf_fast._C for sm_90 with every core, run the
# cuda-marked tests and the benchmarks, and write logs and results into OUTDIR.
#
# Usage: scripts/gpu_check.sh OUTDIR [PYTEST_K_EXPRESSION]
#   PYTEST_K_EXPRESSION narrows tests and benchmarks (pytest -k), for iterating on one op.
# Environment:
#   WHEELS=DIR        wheels to install first (--no-deps, into /tmp/site), e.g. mlperf-logging
#   SKIP_TESTS=1      benchmarks only;  SKIP_BENCH=1  tests only
#   BENCH_PATHS=...   benchmark files or folders (default: benchmarks)
#   TEST_WORKERS=N    run the tests in N processes (pytest-xdist; the Triton JIT is CPU-bound)
#   SANITIZE=1        also run compute-sanitizer's memcheck over the native CUDA kernels' tests
#                     (tests/ops, tests/optim, tests/nn with the native-cuda backend; slow)
#   PACK=1            at the end, replace OUTDIR by one archive OUTDIR.tgz (for transports that
#                     bring back only a few files)
# Results: OUTDIR/build.log, info.txt, tests.log, tests.xml, bench.log, results/<gpu>.{json,md},
# and a summary at the end of stdout.
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUTDIR [PYTEST_K_EXPRESSION]}
kexpr=${2:-}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
status=0
start=$(date +%s)

if [ -n "${WHEELS:-}" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl \
    > "$out/wheels.log" 2>&1 || { echo "wheel install failed"; tail -20 "$out/wheels.log"; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export MLPERF_FAST_BUILD=cuda
echo "== build (sm_${TORCH_CUDA_ARCH_LIST}, ${MAX_JOBS} jobs)"
if ! python3 -m pip install --no-build-isolation --no-deps -e . > "$out/build.log" 2>&1; then
  grep -E "error|Error" "$out/build.log" | head -40
  tail -20 "$out/build.log"
  echo "BUILD FAILED"
  exit 1
fi
echo "   built in $(( $(date +%s) - start )) s"
python3 -m mlperf_fast.info | tee "$out/info.txt"

kargs=()
[ -n "$kexpr" ] && kargs=(-k "$kexpr")
targs=()
[ -n "${TEST_WORKERS:-}" ] && targs=(-n "$TEST_WORKERS")

if [ -z "${SKIP_TESTS:-}" ]; then
  echo "== cuda tests"
  python3 -m pytest tests -m cuda -q -p no:cacheprovider --continue-on-collection-errors "${kargs[@]}" "${targs[@]}" --junitxml "$out/tests.xml" \
    > "$out/tests.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then status=1; fi
  grep -E "^(FAILED|ERROR)" "$out/tests.log" | head -30
  tail -3 "$out/tests.log"
fi

if [ -n "${SANITIZE:-}" ]; then
  echo "== compute-sanitizer memcheck (native CUDA kernels)"
  san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  if [ -x "$san" ]; then
    # Triton's JIT and torch's own kernels are checked too where these tests reach them; the
    # native backend's tests are the ones whose kernels are ours alone.
    "$san" --tool memcheck --error-exitcode 99 --print-limit 20 python3 -m pytest tests/ops \
      tests/optim tests/nn -m cuda -k "native" -q -p no:cacheprovider -x "${kargs[@]}" \
      > "$out/sanitizer.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 5 ] && status=1
    grep -E "ERROR SUMMARY|^(FAILED|ERROR)|Invalid" "$out/sanitizer.log" | head -20
    tail -2 "$out/sanitizer.log"
  else
    echo "   compute-sanitizer not found"
  fi
fi

if [ -z "${SKIP_BENCH:-}" ]; then
  echo "== benchmarks"
  # shellcheck disable=SC2086
  MLPERF_FAST_BENCH_RESULTS="$out/results" python3 -m pytest ${BENCH_PATHS:-benchmarks} -q \
    -p no:cacheprovider "${kargs[@]}" --benchmark-disable-gc --benchmark-columns=min,median,max \
    > "$out/bench.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then status=1; fi
  grep -E "^(FAILED|ERROR)" "$out/bench.log" | head -30
  tail -3 "$out/bench.log"
  for md in "$out"/results/*.md; do
    [ -f "$md" ] && { echo; cat "$md"; }
  done
fi
echo "== done in $(( $(date +%s) - start )) s, status $status"
if [ -n "${PACK:-}" ]; then
  tar czf "$out.tgz" -C "$out" . && rm -rf "$out" && echo "   packed into $out.tgz"
fi
exit $status
