"""Training curves: the PNG plot_runs writes, the lines it draws against the metrics rows the test
wrote, the command line, and the errors (no run, no rows, no matplotlib)."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from mindcv_mobile import plot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_run(folder, rows):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return str(folder)


def _rows(epochs, validate_every=None, null_top5_at=()):
    rows = []
    for e in range(1, epochs + 1):
        row = {
            "epoch": e,
            "global_step": 7 * e,
            "loss": round(2.5 / e + 0.013 * e, 6),
            "lr": 0.1 * (0.7**e),
            "epoch_time_s": 1.5,
            "img_per_s": 300.0,
        }
        if validate_every and e % validate_every == 0:
            row["Top_1_Accuracy"] = round(0.1 + 0.11 * e, 6)
            row["Top_5_Accuracy"] = None if e in null_top5_at else round(0.5 + 0.07 * e, 6)
            row["val_loss"] = round(2.0 / e + 0.1, 6)
        rows.append(row)
    return rows


@pytest.fixture
def runs(tmp_path):
    """Two runs: 'base' validated every other epoch (top-5 null at epoch 4), 'noval' never."""
    base_rows = _rows(6, validate_every=2, null_top5_at=(4,))
    noval_rows = _rows(3)
    base = _write_run(tmp_path / "base", base_rows)
    noval = _write_run(tmp_path / "noval", noval_rows)
    return {"base": (base, base_rows), "noval": (noval, noval_rows)}


def _panel(fig, title):
    (ax,) = [ax for ax in fig.axes if ax.get_title() == title]
    return ax


def _line(ax, label):
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return [float(v) for v in line.get_xdata()], [float(v) for v in line.get_ydata()]


def _same(got, want):
    """Same epochs exactly, same values to float precision."""
    assert got[0] == want[0]
    assert got[1] == pytest.approx(want[1], rel=1e-12)


def _expected(rows, key, scale=1.0):
    kept = [r for r in rows if r.get(key) is not None]
    return [float(r["epoch"]) for r in kept], [scale * r[key] for r in kept]


def test_plot_runs_writes_a_png_whose_lines_are_the_rows(runs, tmp_path, monkeypatch):
    drawn = []
    original = plot.curves_figure
    monkeypatch.setattr(plot, "curves_figure", lambda rows_by_label: drawn.append(original(rows_by_label)) or drawn[-1])
    out_dir = tmp_path / "out"
    out = str(out_dir / "curves.png")
    path = plot.plot_runs([runs["base"][0], runs["noval"][0]], out)

    assert path == os.path.abspath(out)
    assert os.listdir(out_dir) == ["curves.png"]  # no temporary file left
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (int(plot.FIGSIZE[0] * plot.DPI), int(plot.FIGSIZE[1] * plot.DPI))
        image.load()  # the whole stream decodes

    (fig,) = drawn
    base, noval = runs["base"][1], runs["noval"][1]
    loss, acc, val_loss, lr = (_panel(fig, t) for t in ("train loss", "val accuracy", "val loss", "learning rate"))
    _same(_line(loss, "base"), _expected(base, "loss"))
    _same(_line(loss, "noval"), _expected(noval, "loss"))
    _same(_line(acc, "base top-1"), _expected(base, "Top_1_Accuracy", 100.0))
    _same(_line(acc, "base top-5"), _expected(base, "Top_5_Accuracy", 100.0))
    assert _line(acc, "base top-5")[0] == [2.0, 6.0]  # the null top-5 at epoch 4 is left out
    _same(_line(val_loss, "base"), _expected(base, "val_loss"))
    _same(_line(lr, "base"), _expected(base, "lr"))
    _same(_line(lr, "noval"), _expected(noval, "lr"))
    # The run without validation has no line in the validation panels.
    assert [line.get_label() for line in acc.get_lines()] == ["base top-1", "base top-5"]
    assert [line.get_label() for line in val_loss.get_lines()] == ["base"]
    # One colour per run, the same in every panel; each panel with lines has a legend.
    colours = {
        ax.get_title(): {ln.get_label().split(" ")[0]: ln.get_color() for ln in ax.get_lines()} for ax in fig.axes
    }
    assert {c["base"] for c in colours.values()} == {colours["train loss"]["base"]}
    assert colours["train loss"]["base"] != colours["train loss"]["noval"]
    assert all(ax.get_legend() is not None for ax in fig.axes)
    assert not any(ax.texts for ax in fig.axes)


def test_panels_without_validation_say_so(runs, tmp_path):
    fig = plot.curves_figure({"noval": plot.read_run(runs["noval"][0])})
    for title in ("val accuracy", "val loss"):
        ax = _panel(fig, title)
        assert not ax.get_lines()
        assert [t.get_text() for t in ax.texts] == ["no validation rows"]
    _same(_line(_panel(fig, "train loss"), "noval"), _expected(runs["noval"][1], "loss"))
    # Written through plot_runs too, with a label given.
    out = plot.plot_runs([runs["noval"][0]], str(tmp_path / "c.png"), labels=["mine"])
    with Image.open(out) as image:
        assert image.format == "PNG"


def test_rows_are_read_by_epoch_and_the_metrics_file_itself_is_accepted(tmp_path):
    rows = _rows(3)
    folder = _write_run(tmp_path / "r", [rows[2], rows[0], rows[1]])
    assert plot.read_run(folder) == rows
    assert plot.read_run(os.path.join(folder, "metrics.jsonl")) == rows
    assert plot.run_label(os.path.join(folder, "metrics.jsonl")) == "r"


def test_errors_are_one_line_and_name_the_bad_value(runs, tmp_path):
    empty = tmp_path / "fresh"
    empty.mkdir()
    (empty / "config.yaml").write_text("model: mobilenet_v3_small_100\n")
    missing = str(tmp_path / "nowhere")
    cases = [
        (([str(empty)], str(tmp_path / "a.png")), "has no rows", str(empty)),
        (([missing], str(tmp_path / "a.png")), "is not a run directory", missing),
        (([runs["base"][0]], str(tmp_path / "a.jpg")), "must end in .png", "a.jpg"),
        (([], str(tmp_path / "a.png")), "no run directory given", "ckpt_save_dir"),
    ]
    for args, phrase, named in cases:
        with pytest.raises(ValueError) as info:
            plot.plot_runs(*args)
        message = str(info.value)
        assert phrase in message and named in message and "\n" not in message
    with pytest.raises(ValueError, match="1 labels .* for 2 runs"):
        plot.plot_runs([runs["base"][0], runs["noval"][0]], str(tmp_path / "a.png"), labels=["x"])
    with pytest.raises(ValueError, match="repeat a name"):
        plot.plot_runs([runs["base"][0], runs["noval"][0]], str(tmp_path / "a.png"), labels=["x", "x"])
    assert not os.path.exists(tmp_path / "a.png")


def test_without_matplotlib_the_error_says_what_to_install(runs, tmp_path, monkeypatch, capsys):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import of a None entry raises ImportError
    out = str(tmp_path / "c.png")
    with pytest.raises(plot.MissingExtra) as info:
        plot.plot_runs([runs["base"][0]], out)
    message = str(info.value)
    assert isinstance(info.value, ImportError) and info.value.name == "matplotlib"
    assert "pip install mindcv_mobile[viz]" in message and "\n" not in message
    assert not os.path.exists(out)
    assert plot.main([runs["base"][0], "-o", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install mindcv_mobile[viz]" in err


def test_command_line(runs, tmp_path):
    out = str(tmp_path / "cli.png")
    command = [sys.executable, "-m", "mindcv_mobile.plot", runs["base"][0], runs["noval"][0], "-o", out]
    done = subprocess.run([*command, "--labels", "a, b"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == os.path.abspath(out)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1100, 800)

    bad = str(tmp_path / "not_a_run")
    done = subprocess.run([*command[:3], bad, "-o", out], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and bad in done.stderr and "not a run directory" in done.stderr
    assert done.stdout == ""


def test_command_line_labels_and_help(runs, tmp_path, capsys):
    out = str(tmp_path / "c.png")
    assert plot.main([runs["base"][0], "-o", out, "--labels", "a,b"]) == 2
    assert "2 labels (a, b) for 1 runs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        plot.main(["--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--labels" in help_text and "-o OUT" in help_text and len(help_text.splitlines()) < 20
