#!/usr/bin/env bash
# Install napari-nanoclass into ./.venv on a fresh Debian/Ubuntu machine (CPU is enough).
# torch is installed first and pinned to the CPU build: a bare "torch" requirement would pull a
# multi-GB CUDA build on machines without torch.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v xvfb-run >/dev/null; then
  # a virtual display and the GL/XCB libraries Qt needs, for napari's viewer tests
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb libgl1-mesa-dri libglx-mesa0 libegl1 \
    libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
    libxcb-shape0 libxcb-xinerama0 libdbus-1-3 libfontconfig1 >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q ".${extras:+[$extras]}"
