#!/usr/bin/env bash
# Every peer suite, with ours and the original, on this machine's device; one summary page.
#
# Usage: peers/run_all.sh SOURCES OUTDIR
#   SOURCES holds the checkouts: SOURCES/vision (torchvision), SOURCES/audio (torchaudio),
#   SOURCES/apex; a peer whose checkout is missing is left out (lstm needs none). A checkout that
#   is not a git one may hold its description (a tag, an archive's name) in .source-label.
# Results: OUTDIR/<peer>-<mode>-<device>.{json,md} and OUTDIR/summary.md.
set -uo pipefail
src=${1:?usage: peers/run_all.sh SOURCES OUTDIR}
out=${2:?usage: peers/run_all.sh SOURCES OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
status=0
run() {  # peer, then run.py's other arguments
  for mode in "" --original; do
    python3 "$here/run.py" "$@" $mode --out "$out" > "$out/$1${mode:+-original}.log" 2>&1
    rc=$?
    tail -1 "$out/$1${mode:+-original}.log"
    [ $rc -ne 0 ] && { echo "peers: $1 $mode exited $rc"; status=1; }
  done
}
for pair in torchvision:vision torchaudio:audio apex:apex; do
  peer=${pair%%:*}
  dir=$src/${pair##*:}
  if [ ! -d "$dir" ]; then echo "peers: no $dir, $peer left out"; continue; fi
  if [ -f "$dir/.source-label" ]; then
    run "$peer" --source "$dir" --source-label "$(cat "$dir/.source-label")"
  else
    run "$peer" --source "$dir"
  fi
done
run lstm
python3 "$here/summarize.py" "$out" > "$out/summary.md"
head -20 "$out/summary.md"
exit $status
