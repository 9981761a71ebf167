"""napari dock widget "Batch folder": one analysis over a folder, with progress, Cancel, a list of
what happened to each input, and the results opened in the viewer when done.

A form over the batch runner: :func:`.batch.runner.check_folders` refuses bad folders before
anything runs, :func:`.batch.runner.batch_steps` (the generator :func:`run_batch` drives) runs in
the shared :class:`.common.TaskRunner`, and the results open through the plugin's own reader — so
whatever the dock does, a script does with the same calls, and a rerun skips finished inputs
exactly as ``nanoclass batch`` does. The option fields come from the analyses' descriptions: a
switch, a drop-down, a number box or a text box per option, shown for the chosen analysis; their
values become the run's options through the same builder as the command line's
(:meth:`.core.analysis.Analysis.chosen_options`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
    Table,
    Widget,
)

from napari_nanoclass._napari.common import TaskRunner, keep_previous, model_choices, narrow_choices, remember
from napari_nanoclass.batch.runner import BatchProgress, BatchReport, batch_steps, check_folders
from napari_nanoclass.core.analysis import COMMON_OPTIONS, Analysis, Option, analyses, get
from napari_nanoclass.core.devices import available_devices
from napari_nanoclass.core.progress import Progress, Steps

# where the dock starts away from an option's default: windows of at most 1024 px, as in the Segment
# dock, so that progress and Cancel move within a large image
DOCK_DEFAULTS = {"tile": 1024}
COLUMNS = ("input", "status", "detail")


class BatchWidget(Container):
    """Analysis + model + input and output folders + options → a resumable batch run in the dock."""

    def __init__(self, napari_viewer: Any = None) -> None:
        self.viewer = napari_viewer
        self.analysis = ComboBox(label="analysis", choices=[a.name for a in analyses()])
        self.model = ComboBox(label="model", choices=self._model_choices)
        self.folder = FileEdit(label="input folder", mode="d")
        self.out = FileEdit(label="output folder", mode="d")
        own_boxes = {"device", *(a.model_option for a in analyses())}  # chosen in the model and device boxes
        self.fields = _option_fields([o for o in (*(o for a in analyses() for o in a.options), *COMMON_OPTIONS)
                                      if o.name not in own_boxes])
        self.device = ComboBox(label="device", choices=[("best available", None), *((d, d) for d in available_devices())])
        self.overwrite = CheckBox(text="redo finished inputs", value=False,
                                  tooltip="off: inputs done before with the same analysis, options, models and "
                                          "input are skipped. On: every input is done again and its folder in the "
                                          "output replaced, also one this tool did not write (--overwrite)")
        self.open_results = CheckBox(text="open results when done", value=True)
        self.run_button = PushButton(text="Run")
        self.runner = TaskRunner(self.run_button)
        self.summary = Label(value="")  # one short line: a wrapped one is squeezed by the table below
        self.table = _rows_table()
        super().__init__(widgets=[self.analysis, self.model, self.folder, self.out,
                                  *(widget for _, widget in self.fields.values()), self.device, self.overwrite,
                                  self.open_results, self.run_button, self.runner, self.summary, self.table])
        self.rows: list[dict[str, Any]] = []
        self.report: BatchReport | None = None
        self.target: str | None = None  # the output folder of the run in hand (the field may change meanwhile)
        self.analysis.changed.connect(lambda _v: self._show_analysis())
        self.run_button.changed.connect(self.run)
        self._show_analysis()
        remember(self, analysis=self.analysis, folder=self.folder, out=self.out, device=self.device,
                 open_results=self.open_results)
        narrow_choices(self.native)

    @property
    def spec(self) -> Analysis:
        return get(self.analysis.value)

    def _model_choices(self, widget: Any) -> list[Any]:
        """The registered models the chosen analysis' model option takes; "default" where the
        dock does not know which (an analysis added later runs with its default model)."""
        spec = get(self.analysis.value)
        if spec.name == "liposomes":
            from napari_nanoclass._napari.liposomes import _detectors

            return _detectors(widget)
        return (model_choices(spec.model_task)(widget) if spec.model_task and spec.model_option
                else [("(default)", None)])

    def _show_analysis(self) -> None:
        """Offer the chosen analysis' models and options, its default model selected."""
        spec = self.spec
        self.model.reset_choices()
        default = next((o.default for o in spec.options if o.name == spec.model_option), None)
        if default in self.model.choices:
            self.model.value = default
        self.model.visible = spec.model_option is not None
        names = {o.name for o in spec.all_options}
        for name, (_, widget) in self.fields.items():
            widget.visible = name in names

    def options(self) -> dict[str, Any]:
        """The chosen analysis' keyword arguments that the form sets away from their defaults, built
        as ``nanoclass batch`` builds its own, so the same choices make the same signature."""
        spec = self.spec
        chosen = {"device": self.device.value}
        if spec.model_option:
            chosen[spec.model_option] = self.model.value
        chosen |= {o.name: _value(*self.fields[o.name]) for o in spec.all_options if o.name in self.fields}
        return spec.chosen_options(chosen)

    def run(self) -> None:
        folder, out = _typed(self.folder), _typed(self.out)
        try:
            check_folders(self.analysis.value, folder, out)
            steps = batch_steps(self.analysis.value, [folder], out, options=self.options(),
                                overwrite=self.overwrite.value)
        except ValueError as exc:
            self.runner.on_error(exc)
            return
        self.rows, self.report, self.target = [], None, out
        self._show_rows()
        read = self.open_results.value and self.viewer is not None
        self.runner.start(_then_read(steps, read), self.finished, on_step=self.on_step, on_cancel=self._cancelled)

    def on_step(self, step: Progress) -> None:
        """List each input as it is settled (done, skipped as already done, failed and why)."""
        if isinstance(step, BatchProgress) and step.row is not None:
            self.rows.append(step.row)
            self._show_rows(step.count)

    def finished(self, result: tuple[BatchReport, list[tuple[dict[str, Any], list[Any]]]]) -> None:
        report, read = result
        self.report = report
        self.rows = report.rows
        self._show_rows(len(report.rows))
        self.runner.status.value = f"done; results in {self.target}"
        if read:
            opened = self.add_results(read)
            self.runner.status.value += f"; opened {opened} layers"

    def add_results(self, read: list[tuple[dict[str, Any], list[Any]]]) -> int:
        """Add the layers of every input that is done, as the plugin's reader gave them (what File ›
        Open gives). Inputs skipped as already done are not opened twice; an input redone keeps its
        earlier layers as "(previous)". Only the last input's layers are visible: the images would
        hide each other. Returns the number of layers added."""
        added = 0
        for i, (row, layers) in enumerate(read):
            for data, meta, kind in layers:
                names = meta["name"] if isinstance(meta["name"], list) else [meta["name"]]  # one per channel
                if row["skipped"] and all(name in self.viewer.layers for name in names):
                    continue
                for name in names:
                    keep_previous(self.viewer, name)
                visible = meta.get("visible", True) and i == len(read) - 1
                getattr(self.viewer, f"add_{kind}")(data, **{**meta, "visible": visible})
                added += 1
        return added

    def _cancelled(self) -> None:
        self.runner.status.value = (f"cancelled; the {sum(r['status'] == 'ok' for r in self.rows)} finished inputs "
                                    "are kept: Run again to do the rest")

    def _show_rows(self, count: int = 0) -> None:
        cells = [_table_row(r) for r in self.rows]
        self.table.value = {"data": cells, "index": list(range(len(cells))), "columns": list(COLUMNS)}
        for i, (_, _, detail) in enumerate(cells):  # a long reason is cut in its cell: whole on hover
            self.table.native.item(i, 2).setToolTip(detail)
        done = sum(r["status"] == "ok" and not r["skipped"] for r in self.rows)
        skipped = sum(r["skipped"] for r in self.rows)
        failed = sum(r["status"] != "ok" for r in self.rows)
        self.summary.value = f"{done} done, {skipped} skipped, {failed} failed ({len(self.rows)} of {count})" if count else ""


def _option_fields(options: list[Option]) -> dict[str, tuple[Option, Widget]]:
    """One form field per option name (an option several analyses share keeps its value when the
    analysis changes)."""
    fields: dict[str, tuple[Option, Widget]] = {}
    for option in options:
        if option.name not in fields:
            fields[option.name] = (option, _field(option))
    return fields


def _field(option: Option) -> Widget:
    """A switch, a drop-down, a number box or, for a name (a model), a text box for ``option``. A
    number without a default shows 0, and a name an empty box, for "the analysis' own choice"."""
    label = option.flag.lstrip("-").replace("-", " ")
    default = DOCK_DEFAULTS.get(option.name, option.default)
    if option.kind is bool:
        return CheckBox(text=label, value=bool(default), tooltip=option.help)
    if option.choices:
        return ComboBox(label=label, choices=list(option.choices), value=default or option.choices[0],
                        tooltip=option.help)
    if option.kind not in (int, float):
        return LineEdit(label=label, value=default or "", tooltip=option.help)
    box = SpinBox if option.kind is int else FloatSpinBox
    low = option.low if option.default is not None else 0
    extra = {} if option.kind is int else {"step": 0.1}
    field = box(label=label, value=default or 0, min=low, max=option.high, tooltip=option.help, **extra)
    if option.default is None:
        field.native.setSpecialValueText("default")  # shown at 0: the help says what the default is
    return field


def _value(option: Option, widget: Widget) -> Any:
    """The option's value from its field; None (unset) for an option without a default whose field
    shows 0 or off, or for an empty text box."""
    value = widget.value.strip() if isinstance(widget, LineEdit) else widget.value
    if value == "" or (option.default is None and option.kind in (bool, int, float) and value in (0, False)):
        return None
    return value


def _typed(edit: FileEdit) -> str | None:
    """What was typed or picked, None if nothing: an empty FileEdit's value is ``.``, the
    current directory, which must not be taken for a choice."""
    text = edit.line_edit.value.strip()
    return str(Path(text).expanduser()) if text else None


def _then_read(steps: Steps[BatchReport], read: bool
               ) -> Steps[tuple[BatchReport, list[tuple[dict[str, Any], list[Any]]]]]:
    """The run, then (``read``) every finished input's layers read back by the plugin's reader —
    still in the worker thread, one step per input: reading labels and maps takes time that the
    GUI thread, which only adds the layers, must not spend."""
    from napari_nanoclass.io.reader import get_reader

    report = yield from steps
    done = [row for row in report.rows if row["status"] == "ok"] if read else []
    n = len(report.rows)
    layers = []
    for i, row in enumerate(done):  # the run is complete: the bar stays full while results open
        yield BatchProgress(1000 * n, 1000 * n, f"opening {row['stem']} ({i + 1}/{len(done)})", stem=row["stem"],
                            finished=n, count=n)
        layers.append((row, get_reader(row["output"])(row["output"])))
    return report, layers


def _rows_table() -> Table:
    table = Table(value=[], columns=COLUMNS)
    table.read_only = True
    table.native.verticalHeader().setVisible(False)
    table.native.horizontalHeader().setStretchLastSection(True)
    table.min_height = 160
    return table


def _table_row(row: dict[str, Any]) -> list[str]:
    """(input, status, detail): why it was done and how long it took, that it was skipped, or why
    it failed (one line)."""
    if row["skipped"]:
        return [row["stem"], "skipped", "already done, nothing changed"]
    if row["status"] != "ok":  # the row names the input: its folder need not be repeated
        error = " ".join(str(row.get("error", "")).split()).replace(row["input"], Path(row["input"]).name)
        return [row["stem"], "failed", error]
    return [row["stem"], "done", f"{row.get('reason') or 'done'}; {float(row.get('seconds') or 0):.1f} s"]
