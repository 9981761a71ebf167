"""XRD pattern identification: reading and refusing pattern files, preparation, the simulator's
physics, learning from simulated patterns, the class activation, and ``nanoclass xrd`` / batch /
Python API end to end with a tiny model."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_nanoclass.models.registry import ModelInfo, save_model
from napari_nanoclass.models.xrd_cnn import XrdCNN, class_activation
from napari_nanoclass.xrd.patterns import (
    PatternError,
    Preparation,
    lowpass,
    parse_pattern,
    prepare,
    read_pattern,
    resample,
)
from tests.conftest import DATA, reader_layers

SMALL = Preparation(start=10.0, stop=60.0, points=251)  # 0.2° steps: tiny models, fast tests


def _peaks(grid: np.ndarray, centres, heights, width: float = 0.3) -> np.ndarray:
    return sum(h * np.exp(-0.5 * ((grid - c) / width) ** 2) for c, h in zip(centres, heights))


def _write_xy(path: Path, two_theta: np.ndarray, intensity: np.ndarray) -> Path:
    path.write_text("".join(f"{t:.4f} {i:.1f}\n" for t, i in zip(two_theta, intensity)))
    return path


# -- reading ---------------------------------------------------------------------------------------


def test_reads_xy_xye_and_csv_with_header(tmp_path):
    t = np.linspace(10, 60, 200)
    y = 100 + _peaks(t, [14.0], [1000])
    xy = _write_xy(tmp_path / "a.xy", t, y)
    xye = tmp_path / "b.xye"
    xye.write_text("# 2theta counts error\n" + "".join(f"{a} {b} {np.sqrt(b):.2f}\n" for a, b in zip(t, y)))
    table = tmp_path / "c.csv"
    table.write_text("two_theta,intensity\n" + "".join(f"{a},{b}\n" for a, b in zip(t, y)))
    for path in (xy, xye, table):
        pattern = read_pattern(path)
        assert pattern.name == path.stem
        np.testing.assert_allclose(pattern.two_theta, t, atol=1e-4)
        np.testing.assert_allclose(pattern.intensity, y, atol=0.06)


def test_fixed_width_columns_that_ran_together_are_split():
    text = "10 121\n10.0496 100\n14.1185 1697\n14.168110228\n14.2177 13906\n" + "".join(
        f"{15 + i * 0.05:.4f}   50\n" for i in range(20))
    two_theta, intensity = parse_pattern(text)
    assert two_theta[3] == pytest.approx(14.1681) and intensity[3] == 10228


@pytest.mark.parametrize("content, reason", [
    ("", "empty"),
    ("\n\n", "empty"),
    ("".join(f"{10 + i}\n" for i in range(20)), "only one column"),
    ("".join(f"{10 + i} {i}\n" for i in range(10)) + "12.5 abc\n", "non-numeric value on data line 11"),
    ("".join(f"{30 - i} {i}\n" for i in range(20)), "not strictly increasing"),
    ("".join(f"{10 + i} 1\n" for i in range(5)), "only 5 data points"),
])
def test_bad_files_get_one_clear_line_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "film.xy"
    path.write_text(content)
    with pytest.raises(PatternError, match=reason) as info:
        read_pattern(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_real_files_all_read(tmp_path):
    folder = DATA / "xrd-thinfilm"
    if not folder.exists():
        pytest.skip("shared XRD data not present")
    files = sorted(folder.glob("*/*.xy"))
    assert len(files) == 88
    for path in files:
        assert prepare(read_pattern(path), Preparation()).max() == pytest.approx(1.0)


# -- preparation -----------------------------------------------------------------------------------


def test_resampling_keeps_peak_areas_and_marks_the_measured_range():
    fine = np.linspace(12, 50, 3801)  # 0.01° steps
    y = _peaks(fine, [20.0, 30.0], [100.0, 50.0], width=0.2)
    values, inside = resample(fine, y, SMALL.grid)
    assert inside.sum() == pytest.approx((50 - 12) / 0.2, abs=2) and not inside[0] and not inside[-1]
    area_fine = np.trapezoid(y, fine)
    assert values.sum() * SMALL.step == pytest.approx(area_fine, rel=1e-3)


def test_preparation_removes_the_background_and_keeps_the_peaks():
    t = np.linspace(5, 70, 3000)
    background = 500 * np.exp(-(t - 5) / 8) + 300 * np.exp(-0.5 * ((t - 24) / 5) ** 2) + 200
    y = background + _peaks(t, [14.0, 28.4, 40.5], [4000, 2500, 900], width=0.1)
    x = prepare(read_pattern_like(t, y), Preparation())
    grid = Preparation().grid
    assert grid[np.argmax(x)] == pytest.approx(14.0, abs=0.05)
    assert x[np.abs(grid - 28.4) < 0.1].max() > 0.5  # sqrt(2500/4000) ≈ 0.8
    away = np.all([np.abs(grid - c) > 1.0 for c in (14.0, 28.4, 40.5)], axis=0)
    assert x[away].max() < 0.05, "the hump and the low-angle scatter are gone"


def read_pattern_like(two_theta, intensity):
    from napari_nanoclass.xrd.patterns import Pattern

    return Pattern(np.asarray(two_theta, float), np.asarray(intensity, float), "synthetic")


def test_fft_lowpass_removes_noise_but_not_peaks():
    rng = np.random.default_rng(0)
    grid = Preparation().grid
    clean = _peaks(grid, [20, 35], [1.0, 0.6], width=0.25)
    noisy = clean + 0.05 * rng.standard_normal(grid.size)
    smooth = lowpass(noisy, 0.15)
    assert np.abs(smooth - clean).mean() < 0.5 * np.abs(noisy - clean).mean()
    assert smooth[np.argmin(np.abs(grid - 20))] > 0.8


def test_outside_the_models_range_is_refused(tmp_path):
    t = np.linspace(70, 90, 300)
    path = _write_xy(tmp_path / "high.xy", t, 10 + _peaks(t, [80], [100]))
    with pytest.raises(PatternError, match="outside the model's range 10–60"):
        prepare(read_pattern(path), Preparation())


# -- simulation (pymatgen) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tables():
    pytest.importorskip("pymatgen", reason="the xrd-train extra (pymatgen) is not installed")
    from napari_nanoclass.xrd.simulate import peak_table
    from napari_nanoclass.xrd.structures import COMPOUNDS

    wanted = {"MAPbI3-cubic", "Cs2AgBiBr6", "Cs3Bi2I9", "MAPbBr3"}
    return {c.name: peak_table(c) for c in COMPOUNDS if c.name in wanted}


def test_simulated_cubic_perovskite_has_its_bragg_peaks_where_strain_moves_them(tables):
    from napari_nanoclass.xrd.simulate import two_theta

    table = tables["MAPbI3-cubic"]
    index = {tuple(int(v) for v in hkl): i for i, hkl in enumerate(table.hkl)}
    positions = two_theta(table.hkl, table.cell)
    expected = np.degrees(2 * np.arcsin(1.54184 / (2 * 6.33)))  # (100), Bragg's law
    assert positions[index[(1, 0, 0)]] == pytest.approx(expected, abs=1e-3)
    strained = table.cell.copy()
    strained[:3] *= 1.01
    shift = positions - two_theta(table.hkl, strained)
    assert 0 < shift[index[(1, 0, 0)]] < shift[index[(2, 0, 0)]], "strain shifts high-angle peaks more"


def test_texture_scales_whole_peak_families(tables):
    from napari_nanoclass.xrd.simulate import DIRECTIONS, march_dollase

    table = tables["MAPbI3-cubic"]
    index = {tuple(int(v) for v in hkl): i for i, hkl in enumerate(table.hkl)}
    factor = march_dollase(table.cos2[:, DIRECTIONS.index((0, 0, 1))], r=0.3)
    assert factor[index[(1, 0, 0)]] > 3 * factor[index[(1, 1, 1)]]  # (001) films: h00 peaks dominate
    assert factor[index[(2, 0, 0)]] == pytest.approx(factor[index[(1, 0, 0)]])
    np.testing.assert_allclose(march_dollase(table.cos2[:, 0], r=1.0), 1.0)  # r = 1: a random powder


def test_simulated_patterns_vary_and_are_prepared_like_measured_ones(tables):
    from napari_nanoclass.xrd.simulate import simulate

    data = simulate(list(tables.values()), ["Fm-3m", "P6_3/mmc", "Pm-3m"], 30, SMALL, seed=1)
    assert data.x.shape == (30, SMALL.points) and set(data.y) == {0, 1, 2}
    assert np.allclose(data.x.max(axis=1), 1.0) and data.x.min() >= 0
    same = data.x[data.y == 2]
    assert np.corrcoef(same)[np.triu_indices(len(same), 1)].mean() < 0.9, "augmentations make films differ"


def test_a_tiny_cnn_learns_from_simulated_patterns(tables):
    """A few epochs on simulated patterns separate three structure types on held-out simulated
    patterns far above chance, and beat the same network untrained."""
    from napari_nanoclass.xrd.simulate import simulate
    from napari_nanoclass.xrd.train import XrdConfig, predict_logits, train

    torch.set_num_threads(1)
    names = ["Fm-3m", "P6_3/mmc", "Pm-3m"]
    config = XrdConfig(name="tiny-xrd", epochs=4, per_epoch=384, batch_size=32, widths=(8, 16), kernels=(5, 3),
                       hidden=16, dropout=0.0, validation=60, prep=SMALL, lr=5e-3)
    result = train(list(tables.values()), names, config)
    held_out = simulate(list(tables.values()), names, 150, SMALL, seed=777)
    accuracy = (predict_logits(result.model.module, held_out.x).argmax(1) == held_out.y).mean()
    untrained = XrdCNN(3, SMALL.points, (8, 16), (5, 3), 16, 0.0)
    torch.manual_seed(0)
    chance = (predict_logits(untrained, held_out.x).argmax(1) == held_out.y).mean()
    assert accuracy > 0.7 and accuracy > chance + 0.25, (accuracy, chance)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    # the activation explains the class asked for: other classes draw on other parts of the patterns
    x = torch.from_numpy(held_out.x[:20, None])
    cams = [class_activation(result.model.module, x, torch.full((20,), c)).numpy() for c in range(3)]
    assert all(np.abs(cams[a] - cams[b]).mean() > 0.02 for a, b in ((0, 1), (0, 2), (1, 2)))


def test_measured_augmentation_moves_peaks_by_braggs_law_and_keeps_the_pattern_prepared():
    from napari_nanoclass.xrd.augment import MeasuredAugmentation, augment_measured, strained

    grid = Preparation().grid
    x = _peaks(grid, [14.0, 28.4, 40.5], [1.0, 0.7, 0.4], width=0.1)
    moved = strained(x, grid, 0.02, 0.0)
    for centre in (14.0, 28.4, 40.5):  # a 2 % larger lattice: sin θ' = sin θ / 1.02
        expected = 2 * np.degrees(np.arcsin(np.sin(np.radians(centre / 2)) / 1.02))
        near = np.abs(grid - expected) < 1.0
        assert grid[near][np.argmax(moved[near])] == pytest.approx(expected, abs=0.05)
    assert grid[np.argmax(strained(x, grid, 0.0, 0.1))] == pytest.approx(14.1, abs=0.03)  # zero shift
    rng = np.random.default_rng(0)
    films = np.stack([augment_measured(x, grid, rng) for _ in range(20)])
    assert np.allclose(films.max(axis=1), 1.0) and films.min() >= 0 and films.dtype == np.float32
    assert np.corrcoef(films)[np.triu_indices(20, 1)].mean() < 0.9, "each draw is another film"
    quiet = MeasuredAugmentation(strain=0, zero_shift=0, scatter=0, drop=0, noise=0, crop=0)
    np.testing.assert_allclose(augment_measured(x, grid, rng, quiet), x / x.max(), atol=1e-6)


def test_training_with_measured_patterns_learns_what_simulation_does_not_show(tables):
    """Two "measured" classes the simulated structures do not describe (peaks where no simulated
    compound has them) are learnt from a few patterns each and recognised in held-out films of
    them, far better than by the same training without them; the patterns join the reference
    library."""
    from napari_nanoclass.xrd.augment import augment_measured
    from napari_nanoclass.xrd.train import Labelled, XrdConfig, draw_measured, predict_logits, train

    torch.set_num_threads(1)
    names = ["Fm-3m", "P6_3/mmc", "Pm-3m"]
    grid, rng = SMALL.grid, np.random.default_rng(1)

    def film(centres):
        return prepare(read_pattern_like(grid, 5 + _peaks(grid, centres, [900, 500, 300], width=0.3)), SMALL)

    odd = {0: [17.0, 33.0, 51.0], 1: [21.0, 26.0, 44.0]}  # class index → peaks of its "films"
    x = np.stack([film(np.add(odd[c], 0.3 * k)) for c in odd for k in range(3)])
    y = np.repeat(list(odd), 3)
    measured = Labelled([Path(f"m{c}_{k}.xy") for c in odd for k in range(3)], x, y, [f"m{c}" for c in y])
    drawn = draw_measured(measured, 200, grid, rng, XrdConfig().measured_augmentation)
    assert set(drawn.y.tolist()) == {0, 1} and abs((drawn.y == 0).mean() - 0.5) < 0.15
    config = XrdConfig(name="tiny-xrd-measured", epochs=4, per_epoch=384, batch_size=32, widths=(8, 16),
                       kernels=(5, 3), hidden=16, dropout=0.0, validation=30, prep=SMALL, lr=5e-3, pool=300)
    result = train(list(tables.values()), names, config, measured=measured)
    held_out = np.stack([augment_measured(film(np.add(odd[c], 0.15)), grid, rng) for c in odd for _ in range(15)])
    truth = np.repeat(list(odd), 15)
    accuracy = (predict_logits(result.model.module, held_out).argmax(1) == truth).mean()
    without = train(list(tables.values()), names, config).model.module  # the same run, simulated patterns only
    assert accuracy > 0.8 and accuracy > (predict_logits(without, held_out).argmax(1) == truth).mean() + 0.25, accuracy
    info = result.model.info
    assert info.training["data"] == "simulated + measured" and len(info.training["measured"]) == 6
    assert len(result.model.module.references) == len(tables) + 6


def test_grouped_folds_keep_a_films_scans_together_and_spread_each_class():
    from napari_nanoclass.xrd.train import Labelled, grouped_folds

    materials = ["a", "a", "b", "c", "d", "e", "e", "f"]
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    data = Labelled([Path(f"{m}.xy") for m in materials], np.zeros((8, 3)), y, materials)
    folds = grouped_folds(data, 2, seed=0)
    assert folds[0] == folds[1] and folds[5] == folds[6]
    assert set(folds[:4]) == {0, 1} and folds[4] != folds[5]  # class 0 and class 1 in both folds


def test_nearest_reference_baseline_finds_the_compound_of_a_clean_pattern(tables):
    from napari_nanoclass.xrd.simulate import references, simulate
    from napari_nanoclass.xrd.train import nearest_reference, scores

    names = ["Fm-3m", "P6_3/mmc", "Pm-3m"]
    library = references(list(tables.values()), names, SMALL)
    probabilities = nearest_reference(library.x, library, len(names))
    assert (probabilities.argmax(1) == library.y).all()
    noisy = simulate(list(tables.values()), names, 60, SMALL, seed=3)
    result = scores(nearest_reference(noisy.x, library, len(names)), noisy.y, names, top=2)
    assert result["top2"] >= result["top1"] > 1 / 3 and np.sum(result["confusion"]) == 60
    # the same baseline travels inside a model, and its predictions average network and references
    model = XrdCNN(3, SMALL.points, (4, 8), (5, 3), 8, 0.0, n_references=len(library.y)).eval()
    model.set_references(torch.from_numpy(library.x), torch.from_numpy(library.y))
    x = torch.from_numpy(noisy.x[:, None])
    with torch.no_grad():
        np.testing.assert_allclose(model.reference_probabilities(x).numpy(),
                                   nearest_reference(noisy.x, library, len(names)), atol=1e-5)
        np.testing.assert_allclose(model.probabilities(x).numpy(), (torch.softmax(model(x), 1).numpy()
                                   + nearest_reference(noisy.x, library, len(names))) / 2, atol=1e-5)


# -- the scores and material grouping ------------------------------------------------------------------


def test_materials_group_repeated_scans_of_one_film():
    from napari_nanoclass.xrd.train import material_of

    assert material_of("MASnI3_10centCa_2-Theta_Omega") == material_of("MASnI3_10centCa_GIXD_2-Theta")
    assert material_of("MASnI3_again_2-Theta_Omega") == material_of("MASnI3_2-Theta_Omega") == "masni3"
    assert material_of("FAPbI31_MAPbBr9_2-Theta") != material_of("FAPbI32_MAPbBr8_2-Theta")


def test_scores_count_top_k_and_balance_classes():
    from napari_nanoclass.xrd.train import by_material, scores

    p = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.5, 0.1, 0.4], [0.1, 0.2, 0.7]])
    y = np.array([0, 0, 0, 1])
    result = scores(p, y, ["a", "b", "c"], top=2)
    assert result["top1"] == 0.75 and result["top2"] == 1.0
    assert result["balanced"] == pytest.approx(0.5)  # a: 3/3, b: 0/1
    probs, labels = by_material(p, y, ["m1", "m1", "m2", "m3"])
    assert probs.shape == (3, 3) and labels.tolist() == [0, 0, 1]


# -- the model, its activation and the analysis ----------------------------------------------------------


def test_class_activation_is_a_0_to_1_curve_over_the_grid():
    torch.manual_seed(0)
    model = XrdCNN(3, SMALL.points, (4, 8), (5, 3), 8, 0.0).eval()
    x = torch.from_numpy(_peaks(SMALL.grid, [20, 40], [1.0, 0.5]).astype(np.float32))[None, None]
    cam = class_activation(model, x.repeat(3, 1, 1), torch.tensor([0, 1, 2]))
    assert cam.shape == (3, SMALL.points) and float(cam.min()) >= 0 and float(cam.max()) <= 1.0
    assert torch.isclose(cam.amax(dim=1), torch.ones(3)).any(), "rows with any evidence are scaled to 1"
    with pytest.raises(ValueError, match="model expects 251"):
        model(torch.zeros(1, 1, 100))


def test_peak_evidence_lies_on_the_peaks_only():
    from napari_nanoclass.models.xrd_cnn import peak_evidence

    torch.manual_seed(0)
    model = XrdCNN(3, SMALL.points, (4, 8), (5, 3), 8, 0.0).eval()
    signal = _peaks(SMALL.grid, [20, 40], [1.0, 0.5], width=0.2).astype(np.float32)
    evidence = peak_evidence(model, torch.from_numpy(signal)[None, None], torch.tensor([0]), smooth=1)[0].numpy()
    assert evidence.max() == pytest.approx(1.0) and evidence.min() >= 0
    assert evidence[signal < 1e-6].max() < 1e-4, "no evidence where the pattern is empty"


@pytest.fixture
def tiny_xrd_model(user_registry) -> str:
    """A tiny untrained XRD classifier registered in the test's user folder."""
    torch.manual_seed(0)
    params = {"n_classes": 3, "length": SMALL.points, "widths": [4, 8], "kernels": [5, 3], "hidden": 8,
              "dropout": 0.0}
    info = ModelInfo(name="tiny-xrd", task="pattern-classification", architecture="xrd-cnn", arch_params=params,
                     class_names=["Fm-3m", "P6_3/mmc", "Pm-3m"], normalisation=SMALL.to_dict())
    save_model(XrdCNN(**params).eval(), info)
    return info.name


def test_analyse_xrd_from_python(tiny_xrd_model, tmp_path):
    import napari_nanoclass

    t = np.linspace(8, 65, 2000)
    result = napari_nanoclass.analyse_xrd((t, 50 + _peaks(t, [14, 28.3], [900, 400])), tiny_xrd_model)
    assert result.probabilities.sum() == pytest.approx(1.0) and len(result.ranked) == 3
    assert result.predicted in {"Fm-3m", "P6_3/mmc", "Pm-3m"} and result.confidence == max(result.probabilities)
    assert result.signal.shape == result.activation.shape == (SMALL.points,)
    low = napari_nanoclass.analyse_xrd((t, 50 + _peaks(t, [14, 28.3], [900, 400])), tiny_xrd_model, lowpass=0.05)
    assert not np.allclose(low.signal, result.signal), "--lowpass reaches the preparation"


def _xrd_run(tmp_path, model: str):
    """``nanoclass xrd`` over a folder of two films, a broken pattern and a stray file: (inputs, out).
    Exit status 1: the broken pattern fails, the others are written."""
    from napari_nanoclass.cli import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    t = np.linspace(10, 60, 1000)
    _write_xy(inputs / "film_a.xy", t, 20 + _peaks(t, [14, 28.3], [900, 400]))
    _write_xy(inputs / "film_b.xy", t, 20 + _peaks(t, [12.6, 25.5], [300, 800]))
    (inputs / "broken.xy").write_text("".join(f"{30 - i} 5\n" for i in range(20)))
    (inputs / "notes.md").write_text("not a pattern, not picked from the folder")
    out = tmp_path / "out"
    assert main(["xrd", str(inputs), "--out", str(out), "--model", model, "--quiet"]) == 1
    return inputs, out


def test_nanoclass_xrd_writes_table_and_plots_and_reports_bad_files(tiny_xrd_model, tmp_path):
    from napari_nanoclass.cli import main

    inputs, out = _xrd_run(tmp_path, tiny_xrd_model)
    rows = list(csv.DictReader((out / "xrd.csv").open()))
    assert [r["pattern"] for r in rows] == ["broken", "film_a", "film_b"]
    assert rows[0]["status"] == "failed" and "not strictly increasing" in rows[0]["error"]
    for row in rows[1:]:
        assert row["status"] == "ok" and row["space_group"] == row["top1"]
        assert float(row["confidence"]) == float(row["p1"]) >= float(row["p2"]) >= float(row["p3"])
        peaks = [float(t) for t in row["deciding_peaks"].split(";") if t]
        assert peaks and all(10 <= t <= 60 for t in peaks)
        assert (out / f"{row['pattern']}_xrd.png").stat().st_size > 5000
    assert main(["xrd", str(inputs / "film_a.xy"), "--out", str(tmp_path / "np"), "--model", tiny_xrd_model,
                 "--no-plots", "--quiet"]) == 0
    assert not list((tmp_path / "np").glob("*.png"))


def test_batch_xrd_and_its_results_open_in_napari(tiny_xrd_model, tmp_path):
    from napari_nanoclass.batch.runner import run_batch
    from napari_nanoclass.io.reader import get_reader

    t = np.linspace(10, 60, 1000)
    path = _write_xy(tmp_path / "film.xy", t, 20 + _peaks(t, [14, 28.3], [900, 400]))
    report = run_batch("xrd", [tmp_path], tmp_path / "batch", options={"model": tiny_xrd_model})
    assert not report.failed and report.run["models"]["model"].startswith("tiny-xrd sha256:")
    folder = tmp_path / "batch" / "film"
    assert (folder / "xrd.csv").is_file() and (folder / "film_xrd.png").is_file()
    layers = get_reader(str(folder))(str(folder))
    assert [kind for _, _, kind in layers] == ["shapes", "image"]  # the curve, then the saved plot
    assert layers[1][0].ndim == 3 and layers[1][1]["rgb"]
    again = run_batch("xrd", [path], tmp_path / "batch", options={"model": tiny_xrd_model})
    assert again.rows[0]["skipped"], "a complete result is not redone"


def test_the_reader_opens_an_xrd_output_folder_as_curves_with_their_table(tiny_xrd_model, tmp_path):
    from napari_nanoclass.cli import main

    inputs, out = _xrd_run(tmp_path, tiny_xrd_model)
    rows = {r["pattern"]: r for r in csv.DictReader((out / "xrd.csv").open())}

    layers = reader_layers(out)  # the failed pattern has nothing to show
    names = ["film_a pattern", f"film_a XRD {rows['film_a']['space_group']}",
             "film_b pattern", f"film_b XRD {rows['film_b']['space_group']}"]
    assert [layer.name for layer in layers] == names
    for stem, tallest in (("film_a", 14.0), ("film_b", 25.5)):
        curve = layers[f"{stem} pattern"]
        assert curve.features["space_group"][0] == rows[stem]["space_group"]
        assert curve.features["p1"][0] == rows[stem]["p1"] and curve.features["path"][0] == rows[stem]["path"]
        (path,) = curve.data
        assert path[:, 1].min() == pytest.approx(10) and path[:, 1].max() == pytest.approx(60)  # 2θ across
        assert path[np.argmin(path[:, 0]), 1] == pytest.approx(tallest, abs=0.1)  # the highest peak is on top
    plot = layers[names[1]]
    assert plot.extent.world[:, 1] == pytest.approx([10, 60], abs=0.1)  # under the curve, as wide

    assert main(["xrd", str(inputs / "film_a.xy"), "--out", str(tmp_path / "np"), "--model", tiny_xrd_model,
                 "--no-plots", "--quiet"]) == 0
    assert [layer.name for layer in reader_layers(tmp_path / "np")] == ["film_a pattern"]
    (inputs / "film_a.xy").rename(tmp_path / "moved.xy")
    with pytest.raises(ValueError) as info:  # no plot and no pattern: nothing to show, said on one line
        reader_layers(tmp_path / "np")
    assert f"film_a: neither film_a_xrd.png nor the pattern file {inputs / 'film_a.xy'}" in str(info.value)
    assert "\n" not in str(info.value)


def test_an_image_model_is_refused_for_xrd(tiny_model, tmp_path):
    from napari_nanoclass.xrd.predict import XrdFiles

    with pytest.raises(PatternError, match="not a diffraction-pattern classifier"):
        XrdFiles(model=tiny_model)


# -- the shipped model --------------------------------------------------------------------------------


def test_shipped_model_names_what_it_was_trained_on_and_is_fast():
    import time

    from napari_nanoclass.models.registry import load_model
    from napari_nanoclass.xrd import DEFAULT_MODEL, SPACE_GROUPS
    from napari_nanoclass.xrd.predict import analyse

    model = load_model(DEFAULT_MODEL)
    assert model.info.class_names == SPACE_GROUPS and model.info.training["data"] == "simulated + measured"
    training = model.info.training
    assert len(model.module.references) == len(training["references"]) == len(training["compounds"]) + len(
        training["measured"]) and training["measured"]
    assert set(model.module.reference_classes.tolist()) == set(range(len(SPACE_GROUPS)))
    prep = Preparation.from_dict(model.info.normalisation)
    grid = np.linspace(5, 70, 3000)
    cubic = [np.degrees(2 * np.arcsin(1.54184 * np.sqrt(n) / (2 * 6.3))) for n in (1, 2, 3, 4, 5, 6, 8)]
    pattern = (grid, 100 + _peaks(grid, cubic, [1000, 600, 150, 500, 120, 300, 200], width=0.08))
    assert analyse(pattern, model).predicted == "Pm-3m"
    torch.set_num_threads(1)
    start = time.perf_counter()
    for _ in range(5):
        analyse(pattern, model)
    assert (time.perf_counter() - start) / 5 < 0.25, "one pattern takes well under a second on one CPU thread"
    assert prep.points == model.module.length


# -- the napari dock widget ---------------------------------------------------------------------------


def test_dock_widget_classifies_a_pattern_file_and_plots_it(qtbot, tiny_xrd_model, tmp_path):
    from napari.components import ViewerModel

    from napari_nanoclass._napari.xrd import XrdWidget

    t = np.linspace(10, 60, 1000)
    path = _write_xy(tmp_path / "film.xy", t, 20 + _peaks(t, [14, 28.3], [900, 400]))
    widget = XrdWidget(ViewerModel())
    widget.runner.synchronous = True
    widget.model.value = tiny_xrd_model
    widget.run_button.clicked.emit()
    assert widget.runner.last_error is not None, "no file chosen yet: an error is shown, not a crash"
    widget.file.value = path
    widget.run_button.clicked.emit()
    assert widget.runner.last_error is None, widget.runner.last_error
    assert widget.result is not None and widget.result.name == "film"
    assert widget.verdict.value.startswith(widget.result.predicted) and "top 5" in widget.verdict.value
    axes = widget.figure.axes
    assert len(axes) == 2 and len(axes[0].lines) == 1 and len(axes[1].patches) == 3  # pattern; 3 class bars
