"""napari dock widget for liposomes: detect and classify, correct classes by hand, retrain.

A thin form over :mod:`.liposomes` and :mod:`.liposome_training`, run by the same
:class:`._widgets.TaskRunner` (worker thread, progress bar, Cancel, errors shown). Results land
in a Labels layer whose ``features`` table holds one row per liposome (classes, confidences,
diameter) and whose colours show the chosen problem's classes; the dock shows the population
summary and a size histogram. Correcting is done on that layer: paint or erase objects with
napari's tools, set an object's classes here, then "Re-analyse" (classify the corrected
instances), "Retrain classifiers" (fine-tune both classifiers on the objects whose classes were
set by hand) or "Retrain detector" (fine-tune the detector on the objects drawn, redrawn or
confirmed by hand, and on the ones erased as background).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, PushButton, SpinBox

from napari_nanoclass._napari.common import (
    EXCLUDE_TIP,
    ViewerWidget,
    base_data,
    exclusion_choices,
    exclusion_of,
    fresh_workdir,
    keep_previous,
    kept_note,
    layer_choices,
    layer_pixel_size,
    legend_html,
    remember,
    text_label,
)
from napari_nanoclass.core.devices import available_devices
from napari_nanoclass.core.progress import Progress, Steps, scaled
from napari_nanoclass.io.reader import explanation_layer
from napari_nanoclass.liposomes import (
    CLASS_COLOURS,
    DEFAULT_CLASSIFIERS,
    DEFAULT_DETECTOR,
    FINE_BELOW_NM,
    FINE_DETECTOR,
    MIN_DIAMETER_NM,
    PROBLEMS,
    SMALL_DETECTOR,
    SMALL_UP_TO_NM,
    VARIED_DETECTOR,
    default_detector,
    retrained_companion,
)
from napari_nanoclass.liposomes.predict import LiposomeResult, analyse_steps, class_colours, summarise
from napari_nanoclass.liposomes.train import (
    ClassifierConfig,
    ClassifierResult,
    Correction,
    Retrained,
    corrected_objects,
    erased_area,
    mask_signatures,
    retrain_steps,
    train_classifier_steps,
    training_objects,
)
from napari_nanoclass.models.registry import list_models

DETECT = "(detect)"  # the objects choice that detects (a string, not None: magicgui signals no change to None)
REVIEWED = "reviewed"  # features column: the object's classes were set or confirmed by hand
DETECTED = "mask_signatures"  # layer metadata: each object's pixels as the analysis gave them
DETECTED_AREA = "detected_area"  # layer metadata: where the analysis found liposomes (what erasing removes from)


AUTO = f"(auto by pixel size: {FINE_DETECTOR} + {VARIED_DETECTOR}, or {DEFAULT_DETECTOR} + {SMALL_DETECTOR})"
AUTO_TIP = (f"auto: {FINE_DETECTOR} for images at {FINE_BELOW_NM:g} nm/px or finer, with {VARIED_DETECTOR} beside "
            "it for vesicles imaged unlike its training fields; else "
            f"{DEFAULT_DETECTOR}, with {SMALL_DETECTOR} beside it up to {SMALL_UP_TO_NM:g} nm/px for vesicles too "
            "small for it. A detector chosen here runs alone, except one retrained from the automatic choice: it "
            "keeps a detector beside it (the one retrained with it on your corrections).")


def _detectors(_widget: Any) -> list[tuple[str, str | None]]:
    """The automatic choice by pixel size (None), then every registered liposome detector but those
    retrained beside another one: they run with it, and alone would only clutter the list."""
    models = [m for m in list_models() if m.task == "segmentation" and "liposome" in m.class_names]
    companions = {retrained_companion(m.training) for m in models} - {None}
    return [(AUTO, None), *((m.name, m.name) for m in models if m.name not in companions)]


def _classifiers(problem: str) -> Any:
    def choices(_widget: Any) -> list[str]:
        return [m.name for m in list_models()
                if m.task == "object-classification" and m.training.get("problem") == problem]

    return choices


class LiposomeWidget(ViewerWidget):
    """Image layer (+ optional instance Labels layer) → liposome instances, classes and report."""

    def __init__(self, napari_viewer: Any) -> None:
        self.image = ComboBox(label="image", choices=layer_choices(napari_viewer, "Image"))
        self.objects = ComboBox(label="objects", choices=lambda w: [(DETECT, DETECT),
                                                                    *layer_choices(napari_viewer, "Labels")(w)],
                                tooltip="detect liposomes, or classify the instances of a Labels layer")
        self.pixel_size = FloatSpinBox(label="pixel size (nm)", value=0.0, min=0.0, max=100.0, step=0.05,
                                       tooltip="the image's pixel size in nm, read from the layer when its file "
                                       "records one; 0 = unknown: enter it (liposomes are found and measured in nm)")
        self.detector = ComboBox(label="detector", choices=_detectors, tooltip=AUTO_TIP)
        self.exclude = ComboBox(label="exclude", choices=exclusion_choices(napari_viewer), tooltip=EXCLUDE_TIP)
        self.min_diameter = FloatSpinBox(label="min diameter (nm)", value=MIN_DIAMETER_NM, min=1.0, max=1000.0,
                                         step=5.0, tooltip="detections narrower than this are dropped: raise it when "
                                         "your vesicles are known to be larger. Not used for the instances of a "
                                         "Labels layer")
        self.tta = CheckBox(label="test-time augmentation", value=False,
                            tooltip="each detector averages its probabilities over the image's 8 rotations and flips: "
                                    "several times slower, a few more vesicles found. Not used for the instances of "
                                    "a Labels layer")
        self.models = {p: ComboBox(label=f"{p} model", choices=_classifiers(p)) for p in PROBLEMS}
        self.balanced = CheckBox(label="balanced decisions", value=False,
                                 tooltip="classify as if every class were equally common: finds more rare objects, "
                                         "with more false alarms (default: each classifier's stored operating point)")
        self.explain = CheckBox(label="explain", value=False,
                                tooltip="add a map per problem of where in each object its classifier saw evidence "
                                        "for the class it gave (Grad-CAM, 0-1 per object)")
        self.colour_by = ComboBox(label="colour by", choices=list(PROBLEMS), value="lamellarity")
        self.device = ComboBox(label="device", choices=available_devices())
        self.summary = text_label()
        self.legend = text_label()
        self.correction = _CorrectionPanel(self)
        super().__init__(napari_viewer, [self.image, self.objects, self.pixel_size, self.detector, self.exclude,
                                         self.min_diameter, self.tta, *self.models.values(),
                                         self.balanced, self.explain, self.colour_by, self.device])
        self.extend([self.legend, self.summary, self.correction])
        self._defaults()
        # not the pixel size: a layer that records none must not silently get last session's
        remember(self, detector=self.detector, balanced=self.balanced, colour_by=self.colour_by, device=self.device,
                 **{f"{problem}_model": combo for problem, combo in self.models.items()})
        self.result: LiposomeResult | None = None
        self.run_button.changed.connect(self.run)
        self.colour_by.changed.connect(lambda _v: (self.recolour(), self.plot_histogram()))
        self.image.changed.connect(lambda _v: self._pixel_size_from_layer())
        self.objects.changed.connect(lambda _v: self._detecting())
        self._detecting()
        self._pixel_size_from_layer()
        self._canvas: Any = None

    def _defaults(self) -> None:
        self.detector.value = None  # the automatic choice
        for problem, combo in self.models.items():
            if DEFAULT_CLASSIFIERS[problem] in combo.choices:
                combo.value = DEFAULT_CLASSIFIERS[problem]

    def _detecting(self) -> None:
        """The minimum diameter and test-time augmentation only apply to detections, not to the
        instances of a Labels layer."""
        self.min_diameter.enabled = self.tta.enabled = self.objects.value == DETECT

    def _pixel_size_from_layer(self) -> None:
        """The chosen layer's pixel size, or 0 (unknown) for a layer that records none: never the
        previous layer's, which would analyse this one at a scale nobody gave."""
        self.pixel_size.value = layer_pixel_size(self.image.value) or 0.0

    def known_pixel_size(self, layer: Any = None) -> float | None:
        """The pixel size to retrain at: the one ``layer`` (a result) was analysed at, else the
        field's; None, with the reason shown, where there is none."""
        size = (layer.metadata.get("pixel_size_nm") if layer is not None else None) or self.pixel_size.value
        if not size:
            self.runner.on_error(ValueError("pixel size unknown: enter the image's pixel size (nm) in 'pixel size "
                                            "(nm)'"))
            return None
        return float(size)

    def run(self) -> None:
        layer = self.image.value
        chosen = {"image": layer, **{p: c.value for p, c in self.models.items()}}
        missing = [name for name, value in chosen.items() if value is None]
        if missing:
            self.runner.on_error(ValueError(f"choose: {', '.join(missing)}"))
            return
        labels_layer = None if self.objects.value == DETECT else self.objects.value
        steps = analyse_steps(
            np.asarray(base_data(layer)), self.pixel_size.value or None,  # none: the core says so
            labels=None if labels_layer is None else np.asarray(base_data(labels_layer)),
            detector=self.detector.value, classifiers={p: c.value for p, c in self.models.items()},
            min_diameter_nm=self.min_diameter.value, tta=self.tta.value, name=layer.name,
            balanced_decisions=self.balanced.value,
            explain=self.explain.value, device=self.device.value, workdir=fresh_workdir(),
            exclude=exclusion_of(self.exclude.value, layer))
        self.runner.start(steps, lambda result: self.show(result, layer))

    def show(self, result: LiposomeResult, source: Any) -> None:
        """Add the "<image> liposomes" Labels layer (an earlier one is kept, renamed) and the dock's
        summary and histogram."""
        from napari.utils.colormaps import DirectLabelColormap

        self.result = result
        name = f"{source.name} liposomes"
        colormap = DirectLabelColormap(color_dict=result.colours(self.colour_by.value))
        # "reviewed": set by "Set classes" (changed or confirmed by hand); only those objects retrain
        features = {**result.features(), REVIEWED: [False] * len(result.objects)}
        kept = keep_previous(self.viewer, name)
        target = self.viewer.add_labels(result.labels, name=name, features=features, colormap=colormap,
                                        scale=source.scale, translate=source.translate)
        label_box = self.correction.object_label
        target.events.selected_label.connect(lambda _e: setattr(label_box, "value", max(target.selected_label, 1)))
        target.metadata.update(summary=result.summary, pixel_size_nm=result.pixel_size_nm, models=result.models,
                               **{DETECTED: mask_signatures(result.labels),
                                  DETECTED_AREA: np.asarray(result.labels) > 0})
        self.correction.forget_undo()
        self.show_explanations(result, source)
        self.recolour()
        self.show_summary(result.summary)
        self.runner.status.value = f"done: {result.summary['n_objects']} liposomes" + kept_note(kept)

    def show_explanations(self, result: LiposomeResult, source: Any) -> None:
        """One image layer per explained problem, above the objects and aligned with them (the
        source's scale and translate); the first shown, the others hidden so colours never mix.
        An earlier run's maps are kept as "(previous)" even when this run explains nothing: under
        their own name they would pass for explanations of the new objects."""
        for problem in PROBLEMS:
            keep_previous(self.viewer, explanation_layer(None, source.name, problem)[1]["name"])
        for i, (problem, values) in enumerate(result.explanations.items()):
            data, meta, _ = explanation_layer(values, source.name, problem, visible=i == 0)
            self.viewer.add_image(data, **meta, scale=source.scale, translate=source.translate)

    def show_summary(self, s: dict[str, Any]) -> None:
        """The population summary in the dock, and the histogram drawn from ``self.result``."""
        detected_from = f" of ≥ {s['min_diameter_nm']:g} nm" if s.get("min_diameter_nm") not in (None, "") else ""
        detected_from += " (test-time augmented)" if s.get("tta") is True else ""
        self.summary.value = (f"{s['n_objects']} liposomes{detected_from}, median {s['median_diameter_nm']:.0f} nm\n"
                              f"multilamellar {s['pct_multilamellar']:.1f} %, loaded {s['pct_loaded']:.1f} %\n"
                              f"uncertain: lamellarity {s['n_lamellarity_uncertain']}, "
                              f"encapsulation {s['n_encapsulation_uncertain']}")
        self.plot_histogram()

    def resummarise(self, layer: Any) -> None:
        """Recompute the population from the layer's (corrected) features table with the core's
        :func:`summarise`, so the summary, histogram and ``self.result`` never show stale classes."""
        objects = layer.features.rename(columns={"index": "label"}).to_dict("records")
        models = dict(layer.metadata.get("models") or (self.result.models if self.result else {}))
        pixel_size = float(layer.metadata.get("pixel_size_nm") or self.pixel_size.value)
        image = self.image.value.name if self.image.value is not None else layer.name
        detected = layer.metadata.get("summary") or {}  # how the objects were detected; "" for user labels
        how = {key: None if detected.get(key) in (None, "") else detected[key]
               for key in ("min_diameter_nm", "min_ring_snr", "tta")}
        summary = summarise(image, objects, pixel_size, models, **how)
        layer.metadata["summary"] = summary
        self.result = LiposomeResult(layer.data, objects, summary, pixel_size, models)
        self.show_summary(summary)

    def recolour(self) -> None:
        layer = self.result_layer()
        problem = self.colour_by.value
        self.legend.value = legend_html([(c, CLASS_COLOURS[c]) for c in PROBLEMS[problem]], problem)
        if layer is not None:
            from napari.utils.colormaps import DirectLabelColormap

            features = layer.features
            layer.colormap = DirectLabelColormap(color_dict=class_colours(features["index"],
                                                                          features[self.colour_by.value]))

    def result_layer(self) -> Any:
        image = self.image.value
        name = f"{image.name} liposomes" if image is not None else None
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def plot_histogram(self) -> None:
        """Diameter histogram in the dock (matplotlib, drawn only when a Qt window exists)."""
        if self.result is None or getattr(self.viewer, "window", None) is None:
            return
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        if self._canvas is None:
            self._canvas = FigureCanvasQTAgg(Figure(figsize=(3, 2), tight_layout=True))
            self._canvas.setMinimumHeight(180)
            self.native.layout().addWidget(self._canvas)
        figure = self._canvas.figure
        figure.clear()
        axes = figure.add_subplot()
        problem = self.colour_by.value
        bottom = None
        for cls, (counts, edges) in self.result.histogram_by_class(problem).items():
            axes.bar(edges[:-1], counts, width=np.diff(edges), align="edge", bottom=bottom, label=cls,
                     color=CLASS_COLOURS.get(cls, "#ffffff"))
            bottom = counts if bottom is None else bottom + counts
        axes.legend(fontsize="x-small", title=problem, title_fontsize="x-small")
        axes.set_xlabel("diameter (nm)")
        axes.set_ylabel("liposomes")
        self._canvas.draw_idle()


class _CorrectionPanel(Container):
    """Set (change or confirm) one object's classes in the features table; retrain the classifiers
    on the objects set by hand — never on the model's own, unreviewed, guesses."""

    def __init__(self, owner: LiposomeWidget) -> None:
        self.owner = owner
        self.object_label = SpinBox(label="object label", value=1, min=1, max=2**31 - 1,
                             tooltip="defaults to the Labels layer's selected label")
        self.classes = {p: ComboBox(label=p, choices=names) for p, names in PROBLEMS.items()}
        self.set_button = PushButton(text="Set classes")
        self.undo_button = PushButton(text="Undo set classes", enabled=False,
                                      tooltip="restore the classes and summary before the last 'Set classes'")
        self._undo: tuple[Any, Any] | None = None  # (layer, its features before the last "Set classes")
        self.suffix = LineEdit(label="save retrained as", value="-finetuned")
        self.epochs = SpinBox(label="retrain epochs", value=10, min=1, max=500,
                              tooltip="epochs for retraining the classifiers (the detector's fine-tuning keeps "
                                      "its own short schedule)")
        self.retrain_button = PushButton(text="Retrain classifiers on this layer")
        self.detector_button = PushButton(
            text="Retrain detector on corrected objects",
            tooltip="fine-tune the detector on the objects you painted, redrew or confirmed ('Set classes') and "
                    "on the ones you erased, as background; the others are the detector's own guesses and are "
                    "left out. The detector run beside it is retrained on the same corrections and saved as "
                    "<name>-beside")
        self.complete = CheckBox(
            label="every liposome is marked", value=False,
            tooltip="the layer marks every liposome of the image: every other pixel is learnt as background, and "
                    "the detector trains longer on the whole image. Correct a whole image or two this way when "
                    "the detector misses most vesicles of your micrographs")
        super().__init__(widgets=[self.object_label, *self.classes.values(), self.set_button, self.undo_button,
                                  self.suffix, self.epochs, self.retrain_button, self.complete,
                                  self.detector_button])
        self.set_button.changed.connect(self.set_classes)
        self.undo_button.changed.connect(self.undo)
        self.retrain_button.changed.connect(self.retrain)
        self.detector_button.changed.connect(self.retrain_detector)

    def set_classes(self) -> None:
        layer = self.owner.result_layer()
        if layer is None:
            self.owner.runner.on_error(ValueError("run the analysis first: there is no liposome layer to correct"))
            return
        features = layer.features
        rows = features.index[features["index"] == self.object_label.value]
        if len(rows) == 0:
            self.owner.runner.on_error(ValueError(f"no object with label {self.object_label.value} in {layer.name!r}; "
                                                  "re-analyse after painting new objects"))
            return
        self._undo = (layer, features.copy())
        for problem, combo in self.classes.items():
            features.loc[rows, problem] = combo.value
            features.loc[rows, f"{problem}_confidence"] = 1.0  # set by hand
        if REVIEWED not in features:
            features[REVIEWED] = False
        features.loc[rows, REVIEWED] = True
        layer.features = features
        self.owner.recolour()
        self.owner.resummarise(layer)
        self.undo_button.enabled = True

    def undo(self) -> None:
        """One level of undo: the layer's features table (classes, confidences, "reviewed") as
        before the last "Set classes", with colours and summary recomputed from it."""
        if self._undo is None:
            return
        layer, features = self._undo
        self.forget_undo()
        layer.features = features
        self.owner.recolour()
        self.owner.resummarise(layer)
        self.owner.runner.status.value = "undone: classes as before the last 'Set classes'"

    def forget_undo(self) -> None:
        """A new result replaces what an undo would restore."""
        self._undo = None
        self.undo_button.enabled = False

    def retrain(self) -> None:
        owner = self.owner
        layer, image = owner.result_layer(), owner.image.value
        if layer is None:
            owner.runner.on_error(ValueError("run the analysis and correct the liposome layer first"))
            return
        features = layer.features  # a layer opened from saved results has no "reviewed" column yet
        reviewed = features[features[REVIEWED].astype(bool)] if REVIEWED in features else features.iloc[:0]
        classes = {int(r["index"]): {p: str(r[p]) for p in PROBLEMS} for _, r in reviewed.iterrows()}
        # a problem whose reviewed objects all have one class cannot teach the classifier anything: skip it
        trainable = [p for p in owner.models if len({c[p] for c in classes.values()}) > 1]
        if not trainable:
            owner.runner.on_error(ValueError(f"{len(classes)} objects set by hand, none of two different classes: set "
                                             "or confirm the classes of objects of each class ('Set classes') before "
                                             "retraining"))
            return
        # every object stays in the label image (crops see their neighbours as at analysis time); only
        # the reviewed ones carry classes, the others are left out of training
        data, labels = np.asarray(base_data(image)), np.asarray(layer.data)
        pixel_size, detector = owner.known_pixel_size(layer), owner.detector.value
        if pixel_size is None:
            return

        def objects_for(classifier: str) -> Any:
            return training_objects(data, labels, classes, pixel_size, detector, classifier=classifier)

        configs = [ClassifierConfig(name=f"{owner.models[p].value}{self.suffix.value}", problem=p,
                                    init_from=owner.models[p].value, epochs=self.epochs.value,
                                    patience=self.epochs.value) for p in trainable]
        owner.runner.start(_retrain(objects_for, configs), self.retrained)

    def retrain_detector(self) -> None:
        """Fine-tune the detector, and the one beside it where the analysis runs one, on the objects
        drawn, redrawn or confirmed in the result layer and on the detections erased from it as
        background or, with *every liposome is marked*, on the whole layer, every other pixel as
        background (core: :func:`corrected_objects`, :func:`erased_area`, :class:`Correction`,
        :func:`retrain_steps`)."""
        owner = self.owner
        layer, image = owner.result_layer(), owner.image.value
        if layer is None:
            owner.runner.on_error(ValueError("run the analysis and correct the liposome layer first"))
            return
        labels = np.asarray(layer.data)
        pixel_size = owner.known_pixel_size(layer)
        if pixel_size is None:
            return
        correction = (Correction(np.asarray(base_data(image)), labels, pixel_size, complete=True)
                      if self.complete.value else self._changes(layer, labels, image, pixel_size))
        if correction is None:
            return
        chosen = owner.detector.value  # None: the automatic pair
        name = f"{chosen or default_detector(pixel_size)}{self.suffix.value}"
        owner.runner.start(_retrain_detector(correction, chosen, name), self.detector_retrained)

    def _changes(self, layer: Any, labels: np.ndarray, image: Any, pixel_size: float) -> Correction | None:
        """What the user drew, redrew, confirmed or erased in ``layer``, or None (reported) if nothing."""
        features = layer.features
        confirmed = features.loc[features[REVIEWED].astype(bool), "index"] if REVIEWED in features else []
        # a layer opened from saved results has no record of the detection: only confirmed objects count
        detected = layer.metadata.get(DETECTED, mask_signatures(labels))
        objects = corrected_objects(labels, detected, confirmed)
        erased = erased_area(labels, layer.metadata.get(DETECTED_AREA, np.zeros(labels.shape, bool)))
        if not objects and not erased.any():
            self.owner.runner.on_error(ValueError("no object drawn, redrawn, confirmed or erased in "
                                                  f"{layer.name!r}: paint missed liposomes with a new label, correct "
                                                  "outlines, erase false ones, or confirm objects with 'Set classes' "
                                                  "first (or tick 'every liposome is marked')"))
            return None
        return Correction(np.asarray(base_data(image)), labels, pixel_size, objects, erased)

    def detector_retrained(self, retrained: Retrained) -> None:
        model = retrained.detector
        self.owner.reset_choices()
        self.owner.detector.value = model.info.name
        count, erased = model.info.training["objects"], model.info.training["erased"]
        beside = "" if retrained.beside is None else f" with {retrained.beside.info.name} beside it"
        learnt = ("the whole corrected image" if model.info.training["whole_images"] else
                  f"{count} corrected object{'s' * (count != 1)}, {erased} erased region{'s' * (erased != 1)}")
        self.owner.runner.status.value = f"saved {model.info.name}{beside} ({learnt}), selected for the next run"

    def retrained(self, results: list[ClassifierResult]) -> None:
        self.owner.reset_choices()
        for result in results:
            self.owner.models[result.info.training["problem"]].value = result.info.name
        self.owner.runner.status.value = "saved " + ", ".join(r.info.name for r in results)


def _retrain(objects_for: Callable[[str], Any], configs: list[ClassifierConfig]) -> Steps[list[ClassifierResult]]:
    """Fine-tune the configs one after the other as one job (one progress bar, one Cancel), each on
    objects built for its classifier's crop mode — inside the job, so the viewer stays responsive."""
    results = []
    for i, config in enumerate(configs):
        yield Progress(i, len(configs), f"preparing {config.problem} objects")
        objects = objects_for(config.init_from)
        result = yield from scaled(train_classifier_steps(objects, config, register=True), i, len(configs),
                                   f"retraining {config.problem}")
        results.append(result)
    return results


def _retrain_detector(correction: Correction, base: str | None, name: str) -> Steps[Retrained]:
    """Fine-tune ``base`` (None: the automatic choice) on the corrected image, and the detector
    beside it where the analysis runs one, as one job."""
    yield Progress(0, 1, "preparing the corrections")
    return (yield from retrain_steps([correction], name, base, register=True))
