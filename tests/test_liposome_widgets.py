"""Liposome widget on napari's ViewerModel (no canvas), run synchronously: analyse, correct, retrain."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_nanoclass._napari.liposomes import DETECT, LiposomeWidget
from napari_nanoclass._napari.samples import liposome_field
from napari_nanoclass.liposomes import CLASS_COLOURS
from napari_nanoclass.liposomes.simulator import SimulationConfig, simulate_field
from napari_nanoclass.models.registry import list_models, load_model


def _widget(viewer, models) -> LiposomeWidget:
    detector, classifiers = models
    widget = LiposomeWidget(viewer)
    widget.detector.value = detector
    for problem, name in classifiers.items():
        widget.models[problem].value = name
    widget.runner.synchronous = True
    return widget


def test_classify_existing_labels_then_correct_and_retrain(viewer, tiny_liposome_models, monkeypatch):
    from napari_nanoclass._napari import liposomes as panel_module

    field = simulate_field(SimulationConfig(shape=(160, 160), objects=(4, 6), diameter_nm=(40, 120)), seed=11)
    viewer.add_image(field.image, name="cryo", metadata={"pixel_size_nm": 2.5})
    viewer.add_labels(field.labels, name="mine")
    widget = _widget(viewer, tiny_liposome_models)
    assert widget.pixel_size.value == 2.5  # taken from the layer's metadata
    widget.objects.value = viewer.layers["mine"]
    widget.run_button.clicked.emit()
    assert widget.runner.last_error is None, widget.runner.last_error
    layer = viewer.layers["cryo liposomes"]
    assert np.array_equal(layer.data, field.labels)
    assert list(layer.features["index"]) == sorted(o["label"] for o in field.objects)
    assert "diameter_nm" in layer.features and str(len(field.objects)) in widget.summary.value

    # correct object 1 by hand: the table and the colours follow
    widget.colour_by.value = "encapsulation"
    panel = widget.correction
    panel.object_label.value = 1
    panel.classes["lamellarity"].value = "multilamellar"
    panel.classes["encapsulation"].value = "empty"
    panel.set_button.clicked.emit()
    row = layer.features[layer.features["index"] == 1].iloc[0]
    assert (row["lamellarity"], row["encapsulation"], row["lamellarity_confidence"]) == ("multilamellar", "empty", 1.0)
    assert np.allclose(layer.colormap.map(np.array([1]))[0, :3],
                       np.array([int(CLASS_COLOURS["empty"][i:i + 2], 16) / 255 for i in (1, 3, 5)]))

    panel.object_label.value = 2
    panel.classes["lamellarity"].value = "unilamellar"
    panel.classes["encapsulation"].value = "full"
    panel.set_button.clicked.emit()

    panel.object_label.value = 999
    panel.set_button.clicked.emit()
    assert "no object with label 999" in str(widget.runner.last_error)

    assert list(layer.features["reviewed"]) == [i in (1, 2) for i in layer.features["index"]]
    seen = {}
    original = panel_module.training_objects

    def spy(image, labels, classes, *args, **kwargs):
        seen.update(classes)
        return original(image, labels, classes, *args, **kwargs)

    monkeypatch.setattr(panel_module, "training_objects", spy)
    panel.epochs.value = 2
    panel.retrain_button.clicked.emit()
    assert set(seen) == {1, 2}  # only the objects set by hand train the classifiers
    assert widget.runner.last_error is None, widget.runner.last_error
    names = {m.name for m in list_models()}
    assert {"tiny-lamellarity-finetuned", "tiny-encapsulation-finetuned"} <= names
    assert widget.models["lamellarity"].value == "tiny-lamellarity-finetuned"


def test_retraining_needs_objects_set_by_hand(viewer, tiny_liposome_models):
    widget, layer = _analysed(viewer, tiny_liposome_models, seed=12)
    layer.features = layer.features.assign(lamellarity=["unilamellar", "multilamellar"] * (len(layer.features) // 2)
                                           + ["unilamellar"] * (len(layer.features) % 2))  # edited, not reviewed
    widget.correction.retrain_button.clicked.emit()
    assert "0 objects set by hand" in str(widget.runner.last_error)


def test_retraining_an_ensemble_fine_tunes_each_member_and_selects_it(viewer, tiny_liposome_models):
    """Retrain on an ensemble classifier: each member is fine-tuned on the objects set by hand and
    the ensemble saved again, under the suffixed name, and chosen for the next run."""
    from dataclasses import replace

    import torch

    from napari_nanoclass.models.lipnet import LipNetEnsemble
    from napari_nanoclass.models.registry import load_model, save_model

    single = load_model(tiny_liposome_models[1]["encapsulation"])
    info = replace(single.info, name="tiny-encapsulation-ensemble", architecture="lipnet-ensemble",
                   arch_params={"members": 2, **single.info.arch_params})
    ensemble = LipNetEnsemble(2, **single.info.arch_params)
    for member in ensemble.members:
        member.load_state_dict(single.module.state_dict())
    with torch.no_grad():
        ensemble.members[1].head[-1].bias.add_(0.5)  # two members that differ
    save_model(ensemble, info)
    widget, layer = _analysed(viewer, tiny_liposome_models, seed=12)
    widget.reset_choices()
    widget.models["encapsulation"].value = "tiny-encapsulation-ensemble"
    first, second = (int(label) for label in layer.features["index"][:2])
    _set(widget, first, "unilamellar", "full")
    _set(widget, second, "multilamellar", "empty")
    widget.correction.epochs.value = 2
    widget.correction.retrain_button.clicked.emit()
    assert widget.runner.last_error is None, widget.runner.last_error
    assert widget.models["encapsulation"].value == "tiny-encapsulation-ensemble-finetuned"
    tuned = load_model("tiny-encapsulation-ensemble-finetuned")
    assert tuned.info.architecture == "lipnet-ensemble" and len(tuned.module.members) == 2
    assert [m["seed"] for m in tuned.info.training["members"]] == [0, 1]
    for before, after in zip(ensemble.members, tuned.module.members):  # every member moved from its start
        assert not torch.equal(before.head[-1].weight, after.head[-1].weight)


def test_detect_on_the_sample_and_report_errors(viewer, tiny_liposome_models):
    (image, meta, _), (labels, truth, kind) = liposome_field()
    assert kind == "labels" and len(truth["features"]["index"]) == labels.max() > 10
    viewer.add_image(image[:256, :256], **meta)
    widget = _widget(viewer, tiny_liposome_models)
    widget.run_button.clicked.emit()  # detect with the (random) tiny detector: runs end to end
    assert widget.runner.last_error is None, widget.runner.last_error
    assert "simulated liposomes liposomes" in viewer.layers
    from napari_nanoclass.liposomes import MIN_DIAMETER_NM, MIN_RING_SNR

    layer = viewer.layers["simulated liposomes liposomes"]
    assert layer.metadata["summary"]["min_diameter_nm"] == MIN_DIAMETER_NM
    widget.resummarise(layer)  # as after a correction: the population is recomputed, the detection's floors stay
    assert layer.metadata["summary"]["min_diameter_nm"] == MIN_DIAMETER_NM
    assert layer.metadata["summary"]["min_ring_snr"] == MIN_RING_SNR
    assert layer.metadata["summary"]["tta"] is False and "augmented" not in widget.summary.value
    widget.tta.value = True  # test-time augmentation: recorded, kept when the population is recomputed, shown
    widget.run_button.clicked.emit()
    assert widget.runner.last_error is None, widget.runner.last_error
    augmented = viewer.layers["simulated liposomes liposomes"]
    widget.resummarise(augmented)
    assert augmented.metadata["summary"]["tta"] is True and "(test-time augmented)" in widget.summary.value
    widget.image.value = viewer.add_image(np.zeros((2, 64, 64), np.float32), name="stack")
    widget.run_button.clicked.emit()
    assert "2-D image" in str(widget.runner.last_error) and widget.runner.bar.visible is False


def _analysed(viewer, models, seed: int = 13):
    field = simulate_field(SimulationConfig(shape=(160, 160), objects=(4, 6), diameter_nm=(40, 120)), seed=seed)
    viewer.add_image(field.image, name="cryo", metadata={"pixel_size_nm": 2.5})
    viewer.add_labels(field.labels, name="mine")
    widget = _widget(viewer, models)
    widget.objects.value = viewer.layers["mine"]
    widget.run_button.clicked.emit()
    assert widget.runner.last_error is None, widget.runner.last_error
    return widget, viewer.layers["cryo liposomes"]


def _set(widget, label: int, lamellarity: str, encapsulation: str) -> None:
    panel = widget.correction
    panel.object_label.value = label
    panel.classes["lamellarity"].value = lamellarity
    panel.classes["encapsulation"].value = encapsulation
    panel.set_button.clicked.emit()


def test_set_classes_updates_the_summary_and_histogram_and_can_be_undone(viewer, tiny_liposome_models):
    from napari_nanoclass.liposomes.predict import summarise

    widget, layer = _analysed(viewer, tiny_liposome_models)
    before_features = layer.features.copy()
    labels = list(layer.features["index"])
    for label in labels:  # every object multilamellar and full: 100 % whatever the tiny models said
        _set(widget, label, "multilamellar", "full")
    summary = layer.metadata["summary"]
    assert summary == summarise("cryo", widget.result.objects, 2.5, widget.result.models)
    assert summary["min_diameter_nm"] == summary["min_ring_snr"] == summary["tta"] == ""  # the user's labels
    assert not widget.tta.enabled and not widget.min_diameter.enabled  # they apply to detections only
    assert (summary["pct_multilamellar"], summary["pct_loaded"], summary["n_multilamellar"]) == (100, 100, len(labels))
    assert "multilamellar 100.0 %, loaded 100.0 %" in widget.summary.value
    by_class = widget.result.histogram_by_class("lamellarity")
    assert list(by_class) == ["multilamellar"] and by_class["multilamellar"][0].sum() == len(labels)

    widget.correction.undo_button.clicked.emit()  # one level: back to before the last "Set classes"
    last = layer.features[layer.features["index"] == labels[-1]].iloc[0]
    assert (last["lamellarity"], bool(last["reviewed"])) == (before_features.iloc[-1]["lamellarity"], False)
    assert layer.metadata["summary"]["n_multilamellar"] == len(labels) - 1 + (last["lamellarity"] == "multilamellar")
    assert not widget.correction.undo_button.enabled and "undone" in widget.runner.status.value
    widget.correction.undo_button.clicked.emit()  # nothing more to undo: no change, no error
    assert widget.runner.last_error is None


def test_rerunning_keeps_the_earlier_result_layer(viewer, tiny_liposome_models):
    widget, first = _analysed(viewer, tiny_liposome_models)
    _set(widget, int(first.features["index"].iloc[0]), "multilamellar", "empty")
    corrected = first.features.copy()
    widget.run_button.clicked.emit()
    assert widget.runner.last_error is None, widget.runner.last_error
    assert viewer.layers["cryo liposomes (previous)"] is first and first.features.equals(corrected)
    assert viewer.layers["cryo liposomes"] is not first
    assert "earlier result kept as 'cryo liposomes (previous)'" in widget.runner.status.value
    assert not widget.correction.undo_button.enabled  # an undo would now act on the kept layer


def test_detector_retrains_on_the_objects_drawn_redrawn_confirmed_or_erased(viewer, tiny_liposome_models,
                                                                           monkeypatch):
    from napari_nanoclass.liposomes import train as liposome_training

    widget, layer = _analysed(viewer, tiny_liposome_models, seed=11)
    panel = widget.correction
    panel.detector_button.clicked.emit()  # nothing corrected yet: the detector's own objects never teach it
    assert "no object drawn, redrawn, confirmed or erased" in str(widget.runner.last_error)

    widget.runner.last_error = None
    data = layer.data
    empty = next((y, x) for y in range(0, 150, 5) for x in range(0, 150, 5) if not data[y:y + 10, x:x + 10].any())
    data[empty[0]:empty[0] + 10, empty[1]:empty[1] + 10] = 99  # a missed liposome painted with a new label
    trimmed = (data == 3) & ~ndi.binary_erosion(data == 3)
    data[trimmed] = 0  # object 3 redrawn one pixel smaller
    false = data == 2
    data[false] = 0  # object 2 erased: a false detection
    layer.data = data
    panel.object_label.value = 1
    panel.set_button.clicked.emit()  # object 1 confirmed as it is
    seen, erased = [], []
    real = liposome_training.correction_pairs

    def spy(*args, **kwargs):
        seen.extend(args[4])
        erased.append(kwargs["erased"])
        return real(*args, **kwargs)

    monkeypatch.setattr(liposome_training, "correction_pairs", spy)
    panel.detector_button.clicked.emit()
    assert widget.runner.last_error is None, widget.runner.last_error
    assert sorted(seen) == [1, 3, 99]  # object 2 is not learnt as an object, and the untouched ones not at all
    assert np.array_equal(erased[0], false | trimmed)  # taken from the detection: background from now on
    assert "tiny-detector-finetuned" in {m.name for m in list_models()}
    assert widget.detector.value == "tiny-detector-finetuned"  # selected for the next run
    status = widget.runner.status.value
    assert "3 corrected objects" in status and "1 erased region)" in status and "selected for the next run" in status


def test_a_completely_corrected_layer_retrains_the_detector_on_every_pixel(viewer, tiny_liposome_models,
                                                                            monkeypatch):
    """Ticked 'every liposome is marked', the layer as it stands teaches the detector, its objects
    and every other pixel as background, even where nothing was changed."""
    from napari_nanoclass.liposomes import train as liposome_training

    widget, layer = _analysed(viewer, tiny_liposome_models, seed=11)
    panel = widget.correction
    panel.complete.value = True
    seen = []
    real = liposome_training.correction_pairs

    def spy(*args, **kwargs):
        seen.append((args[1].copy(), args[4], kwargs["erased"], kwargs["complete"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(liposome_training, "correction_pairs", spy)
    monkeypatch.setattr(liposome_training, "WHOLE_EPOCHS", 2)  # the whole-image recipe, shortened for the test
    panel.detector_button.clicked.emit()
    assert widget.runner.last_error is None, widget.runner.last_error
    labels, objects, erased, complete = seen[0]
    assert complete and objects is None and erased is None and np.array_equal(labels, layer.data)
    model = load_model("tiny-detector-finetuned")
    assert model.info.training["whole_images"] == 1 and model.info.training["config"]["epochs"] == 2
    assert "the whole corrected image" in widget.runner.status.value


def test_the_dock_shows_a_colour_legend_for_the_classes_it_colours_by(viewer, tiny_liposome_models):
    from napari_nanoclass.liposomes import CLASS_COLOURS

    widget, _layer = _analysed(viewer, tiny_liposome_models)
    legend = widget.legend.value
    assert all(name in legend and CLASS_COLOURS[name] in legend for name in ("unilamellar", "multilamellar"))
    widget.colour_by.value = "encapsulation"
    assert "empty" in widget.legend.value and CLASS_COLOURS["empty"] in widget.legend.value
    assert "unilamellar" not in widget.legend.value


def test_the_detector_list_leaves_out_detectors_retrained_beside_another(viewer, tiny_liposome_models):
    """A detector retrained beside another (``<name>-beside``) runs with it; the list offers the
    pair's detector, the shipped ones and the others, not the companion on its own."""
    from dataclasses import replace

    from napari_nanoclass.liposomes import SMALL_DETECTOR
    from napari_nanoclass.models.registry import load_model, save_model

    base = load_model(tiny_liposome_models[0])
    save_model(base.module, replace(base.info, name="mine-beside"))
    save_model(base.module, replace(base.info, name="mine", training={
        **base.info.training, "small_detector": "mine-beside", "small_detector_default": SMALL_DETECTOR}))
    widget = LiposomeWidget(viewer)
    offered = {value for value in widget.detector.choices}
    assert {"mine", tiny_liposome_models[0], SMALL_DETECTOR} <= offered and "mine-beside" not in offered



def test_min_diameter_drops_narrower_detections_and_is_shown(viewer):
    """The dock's minimum diameter is the CLI's --min-diameter: the same detections less the narrower
    ones, recorded in the summary; it is greyed out when a Labels layer's instances are classified."""
    (image, meta, _), _truth = liposome_field()
    viewer.add_image(image[:384, :384], **meta)
    widget = LiposomeWidget(viewer)
    widget.runner.synchronous = True
    layer_name = f"{meta['name']} liposomes"

    def detect(minimum: float) -> list[float]:
        widget.min_diameter.value = minimum
        widget.run_button.clicked.emit()
        assert widget.runner.last_error is None, widget.runner.last_error
        layer = viewer.layers[layer_name]
        assert layer.metadata["summary"]["min_diameter_nm"] == minimum
        assert f"liposomes of ≥ {minimum:g} nm" in widget.summary.value
        return sorted(layer.features["diameter_nm"])

    every = detect(20.0)
    raised = detect(60.0)
    assert any(d < 60 for d in every) and raised == [d for d in every if d >= 60] and raised
    assert widget.min_diameter.enabled
    widget.objects.value = viewer.add_labels(np.zeros(image.shape, np.int32), name="mine")
    assert not widget.min_diameter.enabled
    widget.objects.value = DETECT
    assert widget.min_diameter.enabled


def test_an_image_without_a_pixel_size_is_not_analysed_at_a_guessed_one(viewer, tiny_liposome_models):
    """The pixel size comes from the chosen layer or the user, never from a default or the layer
    chosen before: without one the run says what is missing, with one typed in it runs."""
    field = simulate_field(SimulationConfig(shape=(160, 160), objects=(4, 6), diameter_nm=(40, 120)), seed=11)
    viewer.add_image(field.image, name="known", metadata={"pixel_size_nm": 2.5})
    widget = _widget(viewer, tiny_liposome_models)
    assert widget.pixel_size.value == 2.5
    widget.image.value = viewer.add_image(field.image, name="unknown")
    assert widget.pixel_size.value == 0  # not the previous layer's 2.5
    widget.run_button.clicked.emit()
    assert "no pixel size" in str(widget.runner.last_error) and "unknown liposomes" not in viewer.layers
    widget.pixel_size.value = 2.0
    widget.run_button.clicked.emit()
    assert widget.runner.last_error is None, widget.runner.last_error
    assert viewer.layers["unknown liposomes"].metadata["pixel_size_nm"] == 2.0
    widget.image.value = viewer.layers["known"]
    assert widget.pixel_size.value == 2.5


def test_liposome_widget_leaves_out_a_region_painted_as_labels(viewer):
    """A carbon film over the bundled micrograph, painted in a Labels layer and chosen under
    'exclude': no object on it, and the shipped models' objects are those the core finds with
    that mask (not those found with the film in: the film skews the normalisation)."""
    from napari_nanoclass._napari.samples import VESICLES_PIXEL_NM, cryoem_vesicles
    from napari_nanoclass.liposomes.predict import analyse

    (image, _, _), = cryoem_vesicles()
    filmed = np.asarray(image, np.float32)
    filmed[:, :300] *= 0.4
    mask = np.zeros(filmed.shape, np.uint8)
    mask[:, :310] = 1
    viewer.add_image(filmed, name="cryo", metadata={"pixel_size_nm": VESICLES_PIXEL_NM})
    viewer.add_labels(mask, name="carbon")
    widget = LiposomeWidget(viewer)
    widget.runner.synchronous = True
    widget.exclude.value = viewer.layers["carbon"]
    widget.run()
    assert widget.runner.last_error is None, widget.runner.last_error
    found = viewer.layers["cryo liposomes"].data
    expected = analyse(filmed, VESICLES_PIXEL_NM, exclude=mask)
    assert len(expected.objects) >= 5 and not found[:, :310].any()
    np.testing.assert_array_equal(found, expected.labels)
    assert not np.array_equal(found, analyse(filmed, VESICLES_PIXEL_NM).labels)
