#!/usr/bin/env bash
# Same set-up as run.sh, then the whole test suite through ctest. Tests that need /dev/kvm or
# QEMU run when they are present and skip with a printed reason when not.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
fb_install_missing
fb_build build -DBUILD_TESTING=ON
ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
