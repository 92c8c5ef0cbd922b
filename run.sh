#!/usr/bin/env bash
# Install what is missing, build, run the default matrix on the best backend available here,
# and write results/ (and plots/ once `flushbench report` exists).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
fb_install_missing
fb_build build
mkdir -p results
exec ./build/bin/flushbench run "$@"
