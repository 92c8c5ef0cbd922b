#!/usr/bin/env bash
# Sourced by run.sh and test.sh: install what is missing (Debian 12), then configure and build.
# Every dependency is a Debian package; nothing is downloaded from anywhere else.
# Run as a program it does the same for one host of a fleet (fleet/site.yml runs it on each):
#   scripts/setup.sh --install-only        install what is missing
#   scripts/setup.sh --build [DIR]         that, then build flushbench into DIR (default build)

FLUSHBENCH_PACKAGES=(
  cmake g++ make pkg-config                      # build
  libgtest-dev libbenchmark-dev libbenchmark-tools  # tests, native baselines, compare.py
  libcli11-dev nlohmann-json3-dev libfmt-dev libtomlplusplus-dev  # CLI, results JSON, formatting, matrices
  libpfm4-dev libtracefs-dev libtraceevent-dev   # host counters, KVM tracepoints
  qemu-system-x86                                # QEMU backends
  grub-pc-bin grub-common xorriso mtools         # bare-metal ISO
  python3 python3-matplotlib python3-scipy       # plots
  clang libclang-rt-14-dev                       # fuzz targets (libFuzzer)
  pcm                                            # Intel PCM sidecar (Intel hosts)
  ansible openssh-client openssh-server          # fleet runs (fleet/site.yml) and their test's sshd
)

fb_log() { printf '%s\n' "flushbench setup: $*" >&2; }

fb_install_missing() {
  local missing=()
  for p in "${FLUSHBENCH_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { fb_log "missing packages (${missing[*]}) and not root: run as root or install them"; return 1; }
    sudo=(sudo)
  fi
  fb_log "installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# fb_build DIR [cmake -D...]: configure and build; FB_TARGETS limits the build to those targets.
fb_build() {
  local dir=${1:-build}
  shift || true
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  # shellcheck disable=SC2086
  cmake --build "$dir" -j "$(nproc)" ${FB_TARGETS:+--target $FB_TARGETS}
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  case "${1:-}" in
    --install-only) fb_install_missing ;;
    --build) fb_install_missing && FB_TARGETS="flushbench flushbench-native" fb_build "${2:-build}" ;;
    *) fb_log "usage: scripts/setup.sh --install-only | --build [DIR] (run.sh and test.sh source it)"; exit 2 ;;
  esac
fi
