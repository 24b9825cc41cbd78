"""Each entry point's --help: only the recipe keys it uses, with their meaning there, short enough
to read (validate/eval/export/infer under 50 lines at 80 columns), train.py in mindcv's groups,
defaults written cleanly; every key is still accepted everywhere.

The help texts come from the real scripts (subprocesses at COLUMNS=80); parsing is checked
in-process. The expected key sets are written out here from what tasks/validate.py,
tasks/export.py and tasks/infer.py read, not taken from the table under test.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from mindcv_mobile.cli import parse_args
from mindcv_mobile.cli_help import default_text, model_families
from mindcv_mobile.config import ALIASES, KEYS, LEGACY_KEYS
from mindcv_mobile.models import list_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "configs", "mobilenetv2", "mobilenet_v2_0.75_ascend.yaml")
SCRIPTS = ("train", "validate", "eval", "export", "infer")
SHORT = ("validate", "eval", "export", "infer")

# What scoring a checkpoint reads (tasks/validate.py, build.eval_config, load_eval_network,
# build_eval_loader, eval_precision, the eval loss, init_runtime).
SCORING_KEYS = {
    "ckpt_path", "pretrained", "model", "num_classes", "ema", "quant", "data_dir", "val_split",
    "train_split", "dataset", "dataset_download", "image_resize", "crop_pct", "interpolation", "mean",
    "std", "batch_size", "num_parallel_workers", "loss", "label_smoothing", "val_amp_level",
    "amp_force", "amp_cast_list", "device_target", "mode", "jit_level",
}  # fmt: skip
# Export: the network (in_channels shapes the exported input), the batch of MINDIR files, the
# preprocessing recorded in the .json; inference: the network and the eval transforms.
EXPORT_KEYS = {
    "ckpt_path", "pretrained", "model", "num_classes", "in_channels", "ema", "quant", "image_resize",
    "batch_size", "crop_pct", "interpolation", "mean", "std", "dataset", "device_target", "mode",
    "jit_level",
}  # fmt: skip
INFER_KEYS = EXPORT_KEYS - {"in_channels"}
EXPECTED = {"validate": SCORING_KEYS, "eval": SCORING_KEYS, "export": EXPORT_KEYS, "infer": INFER_KEYS}
# Keys that only training reads: none may appear in another entry point's help.
TRAINING_ONLY = {
    "lr", "warmup_epochs", "opt", "scheduler", "epoch_size", "weight_decay", "mixup", "cutmix", "hflip",
    "re_prob", "auto_augment", "ckpt_save_dir", "resume", "reduction", "amp_level", "loss_scale",
    "quant_delay", "freeze_bn", "drop_path_rate", "distribute", "tensorboard", "seed",
}  # fmt: skip
# mindcv's config.py (HEAD 51b0636): its argument groups and the keys in each (aliases left out;
# eval_shuffle, which mindcv files under AMP, is a dataset key here).
MINDCV_GROUPS = {
    "System parameters": "mode distribute val_while_train val_interval log_interval seed device_target",
    "Dataset parameters": "dataset data_dir train_split val_split dataset_download num_parallel_workers shuffle "
    "num_samples batch_size drop_remainder",
    "Augmentation parameters": "image_resize scale ratio hflip vflip color_jitter interpolation auto_augment "
    "aug_splits re_prob re_scale re_ratio re_value re_max_attempts mean std crop_pct mixup cutmix aug_repeats",
    "Model parameters": "model num_classes in_channels drop_rate drop_path_rate pretrained ckpt_path resume_opt "
    "keep_checkpoint_max ckpt_save_dir ckpt_save_interval ckpt_save_policy epoch_size dataset_sink_mode ema "
    "ema_decay clip_grad clip_value layer_decay gradient_accumulation_steps",
    "Optimizer parameters": "opt momentum weight_decay use_nesterov weight_decay_filter eps",
    "Scheduler parameters": "scheduler lr min_lr warmup_epochs warmup_factor decay_epochs decay_rate "
    "multi_step_decay_milestones lr_epoch_stair num_cycles cycle_decay",
    "Loss parameters": "loss label_smoothing aux_factor reduction",
    "Auto mixed precision parameters": "amp_level val_amp_level amp_cast_list loss_scale_type loss_scale "
    "drop_overflow_update",
}


@pytest.fixture(scope="module")
def helps() -> dict:
    """``{script: --help output}`` of every entry script, run at an 80-column terminal."""
    env = {**os.environ, "COLUMNS": "80", "LINES": "50"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, f"{name}.py", "--help"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for name in SCRIPTS
    }
    out = {}
    for name, proc in procs.items():
        stdout, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, name
        out[name] = stdout
    return out


def _named(text: str) -> set:
    """The schema keys a help text mentions as --flags (another name of a key counts as the key)."""
    names = set(re.findall(r"--([a-z_0-9]+)", text))
    assert not names & set(LEGACY_KEYS)
    return {ALIASES.get(n, n) for n in names if n in KEYS or n in ALIASES}


def _flat(text: str) -> str:
    return " ".join(text.split())


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", os.path.join(ROOT, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SHORT)
def test_short_entry_points_fit_a_screen(helps, name):
    lines = helps[name].splitlines()
    assert len(lines) < 50, f"{name}.py --help has {len(lines)} lines"
    assert max(map(len, lines)) <= 80


@pytest.mark.parametrize("name", SHORT)
def test_help_names_exactly_the_keys_used(helps, name):
    named = _named(helps[name])
    assert named - EXPECTED[name] == set(), f"{name}.py --help names keys it does not use"
    assert EXPECTED[name] - named == set(), f"{name}.py --help leaves out keys it uses"
    assert not named & TRAINING_ONLY


def test_keys_validate_leaves_out(helps):
    text = helps["validate"]
    for flag in ("--lr ", "--warmup_epochs", "--opt ", "--epoch_size", "--reduction", "--ckpt_save_dir"):
        assert flag not in text
    for flag in ("--val_split", "--data_dir", "--train_split", "--dataset_download"):
        assert flag not in helps["export"] and flag not in helps["infer"]


def test_eval_names_the_model_zoo_flags(helps):
    text = _flat(helps["eval"])
    assert "--ckpt_path STR checkpoint to score (model zoo: --pretrain_ckpt)" in text
    assert "(model zoo: --dataset_path)" in text


def test_ckpt_path_means_what_each_entry_does_with_it(helps):
    assert "checkpoint(s) to score: one or more .ckpt files, or a run directory (every checkpoint in it)" in _flat(
        helps["validate"]
    )
    assert "--ckpt_path STR [STR ...]" in helps["validate"]
    assert "--ckpt_path STR checkpoint to export" in _flat(helps["export"])
    assert "--ckpt_path STR model to run: a .ckpt, or an exported .onnx / .mindir" in _flat(helps["infer"])
    assert "--ckpt_path STR checkpoint to score" in _flat(helps["eval"])
    assert "--ckpt_path STR start from this checkpoint" in _flat(helps["train"])


def test_defaults_print_cleanly(helps):
    for name, text in helps.items():
        assert "(default: )" not in text and "(default: None)" not in text, name
        assert not re.search(r"\d\.\d{10,}", text), name
        assert "(default: False)" not in text, name
    train = _flat(helps["train"])
    # mindcv's ImageNet std in 0-255 units: 0.224 * 255 = 57.120000000000005 in binary floating point.
    assert 0.224 * 255 == 57.120000000000005
    assert "--std FLOATS normalisation std (0-255 scale) (default: [58.395, 57.12, 57.375])" in train
    assert "--scale FLOATS RandomResizedCrop area range (default: [0.08, 1.0])" in train
    assert "--weight_decay FLOAT weight decay (default: 1e-06)" in train
    assert "--tensorboard [BOOL]" in train and "(default: True)" in train
    assert "--image_resize INT input (crop) size (default: the model's)" in _flat(helps["validate"])
    assert "--batch_size INT batch of MINDIR / AIR files (ONNX: any) (default: 1)" in _flat(helps["export"])


@pytest.mark.parametrize(
    "value,text",
    [
        (57.120000000000005, "57.12"),
        (0.1 + 0.2, "0.3"),
        (1e-6, "1e-06"),
        (0.9999, "0.9999"),
        (123.675, "123.675"),
        ([0.08, 1.0], "[0.08, 1.0]"),
        ([30, 60, 90], "[30, 60, 90]"),
        (10_000_000, "10000000"),
        ("latest_k", "latest_k"),
    ],
)
def test_default_text(value, text):
    assert default_text(value) == text


def test_train_help_groups_as_mindcv(helps):
    text = helps["train"]
    sections = re.split(r"\n\n(?=\S)", text)
    where = {}
    for section in sections:
        title = section.splitlines()[0].rstrip(":")
        if title == "options":  # -h, -c, --list_models
            continue
        for name in re.findall(r"^  --([a-z_0-9]+)", section, flags=re.M):
            assert name not in where, f"--{name} listed twice"
            where[name] = title
    assert set(where) == set(KEYS), "train.py --help lists every recipe key, and only those"
    for title, names in MINDCV_GROUPS.items():
        for name in names.split():
            assert where[name] == title, f"--{name} under {where[name]!r}, mindcv: {title!r}"
    assert list(dict.fromkeys(where.values())) == [*MINDCV_GROUPS, "Quantization-aware training parameters"]
    for alias in ("cutmix_prob", "data_url", "pretrain_ckpt", "arch", "alpha"):
        assert f"--{alias}" not in text


def test_model_help_covers_every_registered_model(helps):
    # Expand the brace form by hand: every name, less its optional input-size suffix, is listed.
    def expand(pattern: str) -> set:
        match = re.search(r"\{([^{}]*)\}", pattern)
        if not match:
            return {pattern}
        return {n for option in match.group(1).split(",") for n in expand(pattern.replace(match.group(0), option, 1))}

    families = model_families()
    listed = set()
    for part in families.split(", "):
        listed |= expand(re.sub(r"\[.*?\]", "", part))
    assert listed == {re.sub(r"(_\d{3})_\d+$", r"\1", name) for name in list_models()}
    assert "[_{96,...,224}]" in families  # the mobilenet_v2 input sizes
    for name in SCRIPTS:
        assert "(all: --list_models)" in _flat(helps[name])
        assert families.split(", ")[0] in helps[name]


def test_list_models_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--list_models"], entry="validate")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.split() == list_models()


def test_hidden_keys_are_accepted():
    """A recipe holds every key: -c RECIPE with a training key on the command line still parses."""
    cfg, _ = parse_args(["-c", RECIPE, "--lr", "0.1", "--distribute", "--warmup_epochs", "2"], entry="validate")
    assert (cfg.lr, cfg.distribute, cfg.warmup_epochs, cfg.model) == (0.1, True, 2.0, "mobilenet_v2_075")
    for entry in ("eval", "export", "infer"):
        cfg, _ = parse_args(["-c", RECIPE, "--opt", "sgd", "--pretrain_ckpt", "w.ckpt"], entry=entry)
        assert (cfg.opt, cfg.ckpt_path) == ("sgd", "w.ckpt")
    with pytest.raises(SystemExit):
        parse_args(["--lrr", "0.1"], entry="validate")  # unknown keys are still errors


def test_validate_takes_several_checkpoints():
    arguments = _script("validate")._arguments
    cfg, extras = parse_args(
        ["--ckpt_path", "a.ckpt", "runs/x", "b.ckpt", "--lr", "0.1"], entry="validate", extra_arguments=arguments
    )
    assert cfg.ckpt_path == "a.ckpt" and cfg.origins["ckpt_path"] == "command line"
    assert extras.ckpt_paths == ["a.ckpt", "runs/x", "b.ckpt"]
    _, extras = parse_args(["--ckpt_path", "a.ckpt"], entry="validate", extra_arguments=arguments)
    assert extras.ckpt_paths == ["a.ckpt"]
    _, extras = parse_args(["--pretrained"], entry="validate", extra_arguments=arguments)
    assert extras.ckpt_paths == []
    cfg, extras = parse_args(["--pretrain_ckpt", "w.ckpt"], entry="validate", extra_arguments=arguments)
    assert (cfg.ckpt_path, extras.ckpt_paths) == ("w.ckpt", ["w.ckpt"])


def test_other_entry_points_take_one_checkpoint(capsys):
    for entry in ("train", "eval", "export", "infer"):
        cfg, extras = parse_args(["--ckpt_path", "a.ckpt"], entry=entry)
        assert cfg.ckpt_path == "a.ckpt" and not hasattr(extras, "ckpt_paths")
        with pytest.raises(SystemExit):
            parse_args(["--ckpt_path", "a.ckpt", "b.ckpt"], entry=entry)
        assert "unknown option b.ckpt" in capsys.readouterr().err


def test_unknown_entry_point():
    with pytest.raises(ValueError, match="no entry point 'score'; one of: train, validate, eval, export, infer"):
        parse_args([], entry="score")
