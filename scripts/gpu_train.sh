#!/usr/bin/env bash
# On a GPU machine where mlperf_fast is installed (scripts/gpu_check.sh builds it): train one
# benchmark from its default (embedded) configuration to its target and keep what a reader of the
# result needs in OUTDIR: report.md, report.json, mlperf.log, steps.jsonl, and the run's stdout
# and stderr (the per-epoch lines with the time spent waiting for input).
#
# Usage: scripts/gpu_train.sh OUTDIR NAME [ARGUMENTS OF python -m mlperf_fast.train ...]
# Environment: MLPERF_FAST_CACHE (default /tmp/mlperf_fast_cache) holds the generated data.
set -uo pipefail
out=${1:?usage: scripts/gpu_train.sh OUTDIR NAME [ARGS...]}
name=${2:?usage: scripts/gpu_train.sh OUTDIR NAME [ARGS...]}
shift 2
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export MLPERF_FAST_CACHE=${MLPERF_FAST_CACHE:-/tmp/mlperf_fast_cache}
run=$(mktemp -d /tmp/train-"$name"-XXXX)
start=$(date +%s)
# no --quiet: stderr keeps the status lines (per epoch: the time spent waiting for input)
python3 -m mlperf_fast.train "$name" --output "$run/out" "$@" \
  > "$out/stdout.log" 2> "$out/stderr.log"
rc=$?
for f in report.md report.json mlperf.log steps.jsonl; do
  [ -f "$run/out/run_0/$f" ] && cp "$run/out/run_0/$f" "$out/"
done
echo "== $name: exit $rc after $(( $(date +%s) - start )) s (the corpus generation included)"
[ -f "$out/report.md" ] && cat "$out/report.md"
grep -v "^ *$" "$out/stderr.log" | grep -v Warning | tail -40
exit $rc
