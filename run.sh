#!/usr/bin/env bash
# Install what is missing, build, run the default matrix (the best guest backend here and the same
# patterns natively, into one results file), then draw the figures: results/<run>.json and
# plots/<run>/. Extra arguments go to `flushbench run` (e.g. ./run.sh --matrix quick).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
fb_install_missing
FB_TARGETS="flushbench flushbench-native" fb_build build  # the guest comes with flushbench
out="${FLUSHBENCH_OUT_DIR:-.}"  # where results/ and plots/ go (the benchmark of run.sh uses a scratch one)
mkdir -p "$out/results" "$out/plots"
run="$(date -u +%Y%m%dT%H%M%SZ)-$(hostname)"
status=0
./build/bin/flushbench run --matrix default --out "$out/results/$run.json" "$@" || status=$?
# 0: every cell measured; 1: some cells hung or crashed (recorded in the file). Anything else: stop.
((status <= 1)) || exit "$status"
./build/bin/flushbench report "$out/results/$run.json" --out "$out/plots/$run"
echo "run.sh: $out/results/$run.json and $out/plots/$run/ (flushbench run exit status $status: 1 = some cells hung or crashed, see the file)"
