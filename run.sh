#!/usr/bin/env bash
# Install what is missing, build, run the default matrix on the best backend here and the same
# patterns natively, then draw the figures: results/<run>.json, results/<run>-native.json and
# plots/<run>/. Extra arguments go to `flushbench run` (e.g. ./run.sh --matrix quick).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
fb_install_missing
fb_build build
mkdir -p results plots
run="$(date -u +%Y%m%dT%H%M%SZ)-$(hostname)"
status=0
./build/bin/flushbench run --matrix default --out "results/$run.json" "$@" || status=$?
# 0: every cell measured; 1: some cells hung or crashed (recorded in the file). Anything else: stop.
((status <= 1)) || exit "$status"
./build/bin/flushbench run --backend native --footprints 0,4K,64K,1M --reps 11 --quiet --out "results/$run-native.json"
./build/bin/flushbench report "results/$run.json" "results/$run-native.json" --out "plots/$run"
echo "run.sh: results/$run.json, results/$run-native.json, plots/$run/ (flushbench run exit status $status)"
