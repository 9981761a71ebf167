"""Run a liposome benchmark with the fine pair taking images up to another pixel size.

    python benchmarks/with_fine_below.py NM benchmarks/liposomes_scale.py ARGS…

Sets ``liposomes.FINE_BELOW_NM`` (the coarsest pixel size the automatic choice sends to the fine
detector, with the varied-imaging detector beside it) to ``NM`` for that one run, so that the
benchmark's ``auto`` rows compare the choices of docs/liposomes.md, "Where the fine pair takes
over". The second look at half the scale stays with the detectors that work at 1 nm/px.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import napari_nanoclass.liposomes as liposomes


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    liposomes.FINE_BELOW_NM = float(sys.argv[1])
    script = sys.argv[2]
    sys.argv = [script, *sys.argv[3:]]
    sys.path.insert(0, str(Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
