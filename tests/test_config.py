"""Recipe schema: defaults, YAML + CLI merge, and every way a recipe can be wrong."""

import os

import pytest
import yaml

from mindcv_mobile.cli import parse_args
from mindcv_mobile.config import KEYS, ConfigError, defaults, load_config, read_yaml, save_config

HERE = os.path.dirname(__file__)
MINDCV_V3_SMALL = os.path.join(HERE, "fixtures", "mindcv_mobilenet_v3_small_ascend.yaml")


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_are_mindcv_defaults():
    cfg = defaults()
    assert (cfg.color_jitter, cfg.auto_augment, cfg.re_prob, cfg.mixup, cfg.warmup_factor) == (0.4, None, 0.0, 0.0, 0.0)
    assert (cfg.seed, cfg.mode, cfg.val_amp_level, cfg.lr_epoch_stair, cfg.crop_pct) == (42, 0, "O0", False, 0.875)
    assert cfg.mean == pytest.approx([123.675, 116.28, 103.53])


def test_mindcv_recipe_file_parses_unchanged():
    raw = read_yaml(MINDCV_V3_SMALL)
    cfg = load_config(MINDCV_V3_SMALL)
    for key, value in raw.items():
        assert cfg[key] == value, key
    assert cfg.origins["lr"] == MINDCV_V3_SMALL


def test_cli_overrides_recipe(tmp_path):
    recipe = write(tmp_path, "lr: 0.5\nopt: momentum\nscale: [0.1, 1.0]\n")
    cfg, extra = parse_args(
        [
            "-c",
            recipe,
            "--lr",
            "0.1",
            "--distribute",
            "False",
            "--scale",
            "[0.2, 0.9]",
            "--auto_augment",
            "None",
            "--use_nesterov",
            "true",
        ]
    )
    assert (cfg.lr, cfg.distribute, cfg.scale, cfg.auto_augment, cfg.use_nesterov) == (
        0.1,
        False,
        [0.2, 0.9],
        None,
        True,
    )
    assert cfg.opt == "momentum"
    assert cfg.origins["lr"] == "command line" and cfg.origins["opt"] == recipe


@pytest.mark.parametrize("text", ["False", "false", "no", "0"])
def test_bool_strings_are_false(text):
    # argparse type=bool would turn every one of these into True.
    cfg, _ = parse_args(["--val_while_train", text])
    assert cfg.val_while_train is False


def test_mindcv_alias_keys(tmp_path):
    cfg = load_config(write(tmp_path, "cutmix_prob: 0.3\nckpt_interval: 5\n"))
    assert cfg.mixup_prob == 0.3 and cfg.ckpt_save_interval == 5


@pytest.mark.parametrize(
    "text,match",
    [
        ("lrr: 0.1\n", "unknown key 'lrr'; did you mean lr"),
        ("weight_decay_fliter: auto\n", "did you mean weight_decay_filter"),
        ("lr: fast\n", "lr must be a number, got 'fast'"),
        ("epoch_size: 2.5\n", "epoch_size must be an integer, got 2.5"),
        ("scale: [0.1]\n", "scale must be a list of 2 numbers"),
        ("opt: adamm\n", "opt='adamm' is not one of: momentum, sgd, rmsprop, adam, adamw"),
        ("distribute: maybe\n", "distribute must be true or false or null"),
        ("lr: 0\n", "lr must be positive, got 0.0"),
        ("lr: -0.1\n", "lr must be positive"),
        ("batch_size: 0\n", "batch_size must be positive"),
        ("hflip: 1.5\n", "hflip is a probability"),
        ("crop_pct: 0\n", "crop_pct must be > 0"),
        ("label_smoothing: 1.0\n", "label_smoothing must be in"),
        ("system:\n  mode: 0\n", "system is a section"),
        ("dataset_download: True\n", "works for cifar10, cifar100, mnist, not dataset=.imagenet."),
        ("- lr\n", "a recipe is a mapping"),
    ],
)
def test_bad_recipes_are_one_line_errors(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "lr: 0.1\nopt: momentum\nscale: [0.1, 1.0\nmomentum: 0.9\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: YAML syntax error at line \d+"):
        load_config(path)


def test_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found: .*nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))


def test_cli_errors_exit_with_one_line(capsys):
    with pytest.raises(SystemExit) as err:
        parse_args(["--lrr", "0.1"])
    assert err.value.code == 2
    assert "unknown option --lrr; did you mean lr?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--batch_size", "big"])
    message = capsys.readouterr().err
    assert "batch_size must be an integer, got 'big'" in message and "usage" not in message


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(MINDCV_V3_SMALL, {"data_dir": "/x", "lr": 0.01})
    path = save_config(cfg, str(tmp_path / "run" / "config.yaml"))
    assert load_config(path) == cfg
    assert set(yaml.safe_load(open(path))) == set(KEYS)


def test_exponent_numbers_without_a_dot(tmp_path):
    # YAML 1.1 reads these as strings; recipes and command lines mean numbers.
    cfg, _ = parse_args(["-c", write(tmp_path, "weight_decay: 4e-5\nscale: [8e-2, 1]\n"), "--lr", "1e-3"])
    assert (cfg.weight_decay, cfg.scale, cfg.lr) == (4e-5, [0.08, 1.0], 1e-3)


def test_path_keys_keep_the_string_typed_and_empty_clears(tmp_path):
    """A path is never parsed as YAML: 0x1F is not 31, 010 is not 8, yes is not True; --key "" clears."""
    recipe = write(tmp_path, "ckpt_path: weights/start.ckpt\n")
    cfg, _ = parse_args(
        [
            "-c",
            recipe,
            "--ckpt_save_dir",
            "0x1F",
            "--data_dir",
            "010",
            "--train_split",
            "yes",
            "--val_split",
            "2024-01-01",
            "--ckpt_path",
            "",
        ]
    )
    assert (cfg.ckpt_save_dir, cfg.data_dir, cfg.train_split, cfg.val_split) == ("0x1F", "010", "yes", "2024-01-01")
    assert cfg.ckpt_path == ""
    cfg, _ = parse_args(["--auto_augment", "None", "--model", "mobilenet_v2_100"])
    assert cfg.auto_augment is None and cfg.model == "mobilenet_v2_100"


def test_loss_scale_type_defaults_to_mindcv_fixed():
    """mindcv's MobileNet recipes set loss_scale: 1024 and rely on its default type, fixed."""
    from mindcv_mobile.training.train_step import resolve_precision

    cfg = load_config(MINDCV_V3_SMALL)
    assert cfg.loss_scale_type == "fixed" and "loss_scale_type" not in read_yaml(MINDCV_V3_SMALL)
    for device in ("Ascend", "GPU"):
        precision = resolve_precision(cfg, device)
        assert (precision.dynamic, precision.check_overflow, precision.loss_scale) == (False, False, cfg.loss_scale)
    assert resolve_precision(load_config(MINDCV_V3_SMALL, {"loss_scale_type": "dynamic"}), "Ascend").dynamic
    assert not resolve_precision(load_config(MINDCV_V3_SMALL, {"loss_scale_type": "dynamic"}), "CPU").dynamic


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_config_errors(value):
    with pytest.raises(ConfigError, match=f"lr must be a finite number, got {value}$"):
        load_config(None, {"lr": float(value)})


def test_bare_boolean_flags_mean_true_and_names_match_any_case(tmp_path):
    """mindcv's habits: `--distribute` / `--val_while_train` without a value, `opt: SGD`, `loss: ce`."""
    cfg, _ = parse_args(["--val_while_train", "--ema", "--lr", "0.1", "--opt", "SGD", "--loss", "ce"])
    assert (cfg.val_while_train, cfg.ema, cfg.lr, cfg.opt, cfg.loss) == (True, True, 0.1, "sgd", "CE")
    cfg, _ = parse_args(["--val_while_train", "False", "--interpolation", "BICUBIC", "--device_target", "cpu"])
    assert (cfg.val_while_train, cfg.interpolation, cfg.device_target) == (False, "bicubic", "CPU")
    assert load_config(write(tmp_path, "opt: AdamW\nscheduler: Cosine_Decay\n")).opt == "adamw"
    assert load_config(None, {"opt": "LION", "scheduler": "Warmup_Cosine_Decay"}).opt == "lion"
    with pytest.raises(ConfigError, match="opt='lionn' is not one of"):
        load_config(None, {"opt": "lionn"})
