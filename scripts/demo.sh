#!/usr/bin/env bash
# Install, then segment the bundled Drosophila ssTEM section headless with the shipped model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/nanoclass models
.venv/bin/nanoclass demo --out results/demo
