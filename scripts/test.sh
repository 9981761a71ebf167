#!/usr/bin/env bash
# Install with test extras, then run the whole test suite (viewer tests on a virtual display).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
.venv/bin/npe2 validate napari-nanoclass
exec xvfb-run -a .venv/bin/python -m pytest -p no:cacheprovider -q "$@"
