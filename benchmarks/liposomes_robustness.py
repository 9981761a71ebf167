"""The shipped liposome analysis on the real development micrograph altered as real micrographs
can be: a carbon film over part of the field, hot pixels, contrast inverted.

    python benchmarks/liposomes_robustness.py [--margin 25]

F1 at box IoU ≥ 0.3 against our annotation (benchmarks/liposomes_real.py), at the micrograph's
0.2 nm/px. A carbon film darkens a band along the left edge by a factor (its noise with it), with a
wavy, slightly blurred edge; the score off the film counts the vesicles wholly beside it (and every
detection, so its precision is a lower bound). Each film is then left out as a user marks it (the
analyses' ``exclude``: its region drawn ``--margin`` px past its edge). Hot pixels are single pixels at the mean plus k
standard deviations. Nothing is chosen on these figures: they say where the analysis holds on
data like a user's and where it does not (docs/liposomes.md, "Carbon film, hot pixels, inverted
contrast").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from liposomes_real import DATA, NATIVE_NM, annotation, score  # noqa: E402  (benchmarks/ is not a package)


def carbon(image: np.ndarray, share: float, darkness: float) -> tuple[np.ndarray, float]:
    """``image`` with a carbon film over the left ``share`` of its width (plus a wave of 5 %),
    ``darkness`` times as bright; and the x beyond which the film never reaches."""
    edge = _film_edge(image.shape, share)
    film = ndi.gaussian_filter((np.arange(image.shape[1]) < edge).astype(np.float32), 3)
    return image * (1 - (1 - darkness) * film), float(edge.max())


def _film_edge(shape: tuple[int, int], share: float) -> np.ndarray:
    """The film's edge: its x in each row (a column vector)."""
    rows = np.arange(shape[0])[:, None]
    return share * shape[1] + 0.05 * shape[1] * np.sin(rows / shape[0] * np.pi)


def drawn(shape: tuple[int, int], share: float, margin: int) -> np.ndarray:
    """The film as a user marks it to leave it out (the analyses' ``exclude``): its region drawn
    ``margin`` px past its edge."""
    return np.arange(shape[1]) < _film_edge(shape, share) + margin


def main() -> None:
    from napari_nanoclass import analyse_liposomes, read_image

    margin = int(sys.argv[sys.argv.index("--margin") + 1]) if "--margin" in sys.argv else 25

    image = np.asarray(read_image(DATA).data, np.float32)
    truth = annotation()

    def f1(data: np.ndarray, vesicles: list[dict] | None = None, exclude: np.ndarray | None = None) -> dict:
        return score(np.asarray(analyse_liposomes(data, NATIVE_NM, exclude=exclude).labels), vesicles or truth, 0.3)

    print("as recorded:", f1(image))
    for share in (0.15, 0.3):
        for darkness in (0.8, 0.6, 0.4):
            filmed, beyond = carbon(image, share, darkness)
            beside = [t for t in truth if t["x"] - t["r"] > beyond]
            print(f"carbon film over {share:.0%} of the width, {darkness:g}× as bright: all {f1(filmed)['f1']}; "
                  f"the {len(beside)} vesicles beside it {f1(filmed, beside)} (as recorded: {f1(image, beside)})")
            marked = drawn(image.shape, share, margin)
            print(f"  the film left out (exclude, drawn {margin} px past its edge): the vesicles beside it "
                  f"{f1(filmed, beside, marked)} (as recorded, the same region left out: "
                  f"{f1(image, beside, marked)})", flush=True)
    rng = np.random.default_rng(0)
    for share, k in ((1e-4, 20), (1e-4, 100), (1e-3, 20), (1e-5, 1000)):
        hot = image.copy()
        hot.flat[rng.choice(hot.size, int(share * hot.size), replace=False)] = image.mean() + k * image.std()
        print(f"{int(share * hot.size)} hot pixels at {k} standard deviations: {f1(hot)}")
    print("contrast inverted:", f1(image.max() + image.min() - image))


if __name__ == "__main__":
    main()
