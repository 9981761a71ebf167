#!/usr/bin/env bash
# Install (with Qt, so that .venv/bin/napari opens with the plugin), then segment the bundled
# Drosophila ssTEM section headless with the shipped model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh qt
.venv/bin/python -c "import qtpy, napari_nanoclass; print('napari GUI ready: Qt binding', qtpy.API_NAME)"
.venv/bin/nanoclass models
.venv/bin/nanoclass demo --out results/demo
