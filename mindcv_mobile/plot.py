"""Training curves of one or more runs as a PNG, drawn from each run directory's ``metrics.jsonl``.

    python -m mindcv_mobile.plot RUN [RUN ...] -o curves.png [--labels a,b]

Four panels share the epoch axis: train loss, val top-1/top-5 (%), val loss and the learning rate.
Each run keeps one colour in every panel; top-5 is dashed. matplotlib (the ``viz`` extra) draws
through its Agg canvas only, so an interactive user's backend is left alone.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Optional, Sequence

from .files import atomic_open
from .run_dir import METRICS, RunDir

INSTALL_HINT = "pip install mindcv_mobile[viz] (or pip install matplotlib)"
FIGSIZE = (11.0, 8.0)  # inches
DPI = 100  # so the PNG is 1100 x 800 pixels
# (title, y label, [(row key, scale, line style, label suffix)], text of a panel no run has data for)
PANELS = (
    ("train loss", "loss", [("loss", 1.0, "-", "")], "no loss in the rows"),
    (
        "val accuracy",
        "accuracy (%)",
        [("Top_1_Accuracy", 100.0, "-", " top-1"), ("Top_5_Accuracy", 100.0, "--", " top-5")],
        "no validation rows",
    ),
    ("val loss", "loss", [("val_loss", 1.0, "-", "")], "no validation rows"),
    ("learning rate", "lr", [("lr", 1.0, "-", "")], "no lr in the rows"),
)


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says what to install."""


def _matplotlib():
    """(Figure, FigureCanvasAgg), or MissingExtra naming the install command."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise MissingExtra(
            f"training curves need matplotlib, which is not installed ({err}): {INSTALL_HINT}", name="matplotlib"
        ) from None
    return Figure, FigureCanvasAgg


def read_run(path: str) -> list:
    """The rows of a run directory's ``metrics.jsonl`` (a path to the file itself works too), by
    epoch; ValueError naming the path when it is no run directory or holds no row yet."""
    if os.path.basename(path) == METRICS and os.path.isfile(path):
        path = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a run directory (expected a ckpt_save_dir holding {METRICS})")
    rows = RunDir(path).read_metrics()
    if not rows:
        raise ValueError(f"run {path} has no rows in {METRICS} yet (a row is written at the end of every epoch)")
    bad = [i + 1 for i, row in enumerate(rows) if not isinstance(row, dict) or not isinstance(row.get("epoch"), int)]
    if bad:
        raise ValueError(
            f"{os.path.join(path, METRICS)} line {bad[0]} has no integer 'epoch'; it is not a metrics file"
        )
    return sorted(rows, key=lambda row: row["epoch"])


def run_label(path: str) -> str:
    """A run's default label: its directory name."""
    path = os.path.abspath(path)
    if os.path.basename(path) == METRICS:
        path = os.path.dirname(path)
    return os.path.basename(path)


def _points(rows: list, key: str, scale: float) -> tuple:
    """(epochs, values) of the rows that hold a number under ``key``."""
    pairs = [(row["epoch"], scale * row[key]) for row in rows if isinstance(row.get(key), (int, float))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def curves_figure(rows_by_label: dict):
    """A 2x2 :class:`matplotlib.figure.Figure` of the runs ``{label: rows}`` (rows as in
    ``metrics.jsonl``), not attached to pyplot. Axes titles are those of ``PANELS``; each line's
    label is the run's label, plus " top-1" / " top-5" in the accuracy panel."""
    Figure, FigureCanvasAgg = _matplotlib()
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex=True).reshape(-1)
    for n, (ax, (title, ylabel, series, empty)) in enumerate(zip(axes, PANELS)):
        ax.set_title(title)
        if n >= 2:  # the shared epoch axis is labelled under the bottom row
            ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for i, (label, rows) in enumerate(rows_by_label.items()):
            for key, scale, style, suffix in series:
                x, y = _points(rows, key, scale)
                if x:
                    # Markers: a run validated every k epochs may have single points.
                    ax.plot(x, y, style, color=f"C{i % 10}", marker="o", markersize=3, label=f"{label}{suffix}")
        if ax.get_lines():
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", color="0.4")
            ax.set_yticks([])
    return fig


def plot_runs(run_dirs: Sequence[str], out: str, labels: Optional[Sequence[str]] = None) -> str:
    """Draw the runs' curves into the PNG ``out`` (written atomically); returns its absolute path.

    Raises MissingExtra (an ImportError) without matplotlib, ValueError for a path that is no run
    directory, a run without rows, labels that do not match the runs or an ``out`` not ending in
    .png, and files.WriteError when ``out`` cannot be written."""
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ValueError("no run directory given; pass at least one ckpt_save_dir")
    if not str(out).lower().endswith(".png"):
        raise ValueError(f"curves output {out!r} must end in .png (the figure is written as PNG)")
    if labels is None:
        labels = [run_label(path) for path in run_dirs]
        if len(set(labels)) < len(labels):  # same folder names under different parents
            labels = [os.path.normpath(path) for path in run_dirs]
    labels = [str(label) for label in labels]
    if len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels ({', '.join(labels)}) for {len(run_dirs)} runs; give one label per run")
    if len(set(labels)) < len(labels):
        raise ValueError(f"labels {', '.join(labels)} repeat a name; give each run its own label")
    _matplotlib()  # fail on the missing extra before reading anything
    fig = curves_figure({label: read_run(path) for label, path in zip(labels, run_dirs)})
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    with atomic_open(out, binary=True, what="training curves") as f:
        f.write(buffer.getvalue())
    return os.path.abspath(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mindcv_mobile.plot",
        description="Draw the training curves (loss, val accuracy, val loss, LR) of runs into one PNG.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directory (ckpt_save_dir) holding metrics.jsonl")
    parser.add_argument("-o", "--out", default="curves.png", help="PNG to write (default: curves.png)")
    parser.add_argument("--labels", help="comma-separated legend names, one per run (default: directory names)")
    args = parser.parse_args(argv)
    labels = [label.strip() for label in args.labels.split(",")] if args.labels is not None else None
    try:
        path = plot_runs(args.runs, args.out, labels)
    except (ValueError, ImportError, OSError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
