"""Everything a run directory (``ckpt_save_dir``) holds, and how it is written.

    config.yaml           the resolved recipe the run trained with
    classes.json          class names in label order (labels of every split come from it)
    train.log             rank 0's log
    metrics.jsonl         one JSON row per epoch (rewritten whole, atomically)
    <model>-E_S.ckpt      epoch checkpoints with the full training state, rotated
    <model>-best.ckpt     the best by val top-1
    last_checkpoint.json  the resume pointer: newest epoch checkpoint and the kept ones

Every file goes through :mod:`mindcv_mobile.files` (temporary file, fsync, rename), so a run
killed at any moment leaves the previous complete version of each file.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Optional

import yaml

from .files import write_json, write_jsonl, write_yaml
from .models.checkpoint import save_checkpoint

CONFIG = "config.yaml"
CLASSES = "classes.json"
LOG = "train.log"
METRICS = "metrics.jsonl"
LAST_CHECKPOINT = "last_checkpoint.json"
# Which epoch checkpoints ``keep_checkpoint_max`` keeps.
SAVE_POLICIES = ("latest_k", "top_k")
# Recipe keys a resumed run must share with the run it continues: they fix the LR position (steps
# per epoch), the data order and the parameters' shapes. epoch_size may grow (the schedule is
# recomputed from the recipe); lr, augmentation and intervals may change.
RESUME_KEYS = (
    "model",
    "num_classes",
    "in_channels",
    "quant",
    "opt",
    "dataset",
    "train_split",
    "num_samples",
    "batch_size",
    "drop_remainder",
    "shuffle",
    "seed",
    "aug_repeats",
    "gradient_accumulation_steps",
)


def read_jsonl(path: str) -> list:
    """Rows of a JSON-lines file ([] when absent); a torn last line from an older writer is dropped."""
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def read_json(path: str, what: str):
    """A JSON file the toolkit wrote; a damaged one is an error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{what} {path} is not valid JSON ({err.msg} at line {err.lineno}); delete it or restore it from a backup"
        ) from None


def recipe_record(cfg, devices: int) -> str:
    """What identifies a run for resuming (``RESUME_KEYS`` and the device count), as saved in
    every checkpoint."""
    return json.dumps({**{key: cfg[key] for key in RESUME_KEYS}, "devices": devices}, sort_keys=True)


def resume_changes(checkpoint: str, state: dict, current: str) -> list:
    """``["batch_size 16 -> 32", ...]``: how this run differs from the one that wrote ``checkpoint``
    (its recorded recipe; for checkpoints without one, the ``config.yaml`` beside it)."""
    now = json.loads(current)
    if isinstance(state.get("train_state.recipe"), str) and state["train_state.recipe"]:
        then = json.loads(state["train_state.recipe"])
    else:
        beside = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), CONFIG)
        if not os.path.isfile(beside):
            return []
        with open(beside, encoding="utf-8") as f:
            then = yaml.safe_load(f) or {}
    return [
        f"{key} {then[key]} -> {now[key]}" for key in (*RESUME_KEYS, "devices") if key in then and then[key] != now[key]
    ]


def classes_near(weights: str) -> Optional[list]:
    """The class names of the run directory holding ``weights`` (its ``classes.json``), or None."""
    path = os.path.join(os.path.dirname(os.path.abspath(weights)), CLASSES)
    if not os.path.isfile(path):
        return None
    return [str(c) for c in read_json(path, "class list")]


class RunDir:
    """One run directory: its file names, readers and (rank 0's) writers."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def check_writable(self) -> None:
        """Fail before any work when the folder cannot take checkpoints."""
        try:
            os.makedirs(self.path, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".write-test-"):
                pass
        except OSError as err:
            raise PermissionError(
                f"ckpt_save_dir {self.path} is not writable ({err.strerror or err}); "
                f"pass --ckpt_save_dir DIR for a folder you can write to"
            ) from None

    # ------------------------------------------------------------------ what the run is
    def write_config(self, values: dict) -> str:
        return write_yaml(self.file(CONFIG), dict(values), "run config")

    def write_classes(self, classes: list) -> str:
        return write_json(self.file(CLASSES), list(classes), "class list")

    def read_classes(self) -> Optional[list]:
        return classes_near(self.file(CLASSES))

    # ------------------------------------------------------------------ what the run did
    def read_metrics(self) -> list:
        return read_jsonl(self.file(METRICS))

    def write_metrics(self, rows: list) -> str:
        return write_jsonl(self.file(METRICS), rows, "metrics")

    def pointer(self) -> Optional[dict]:
        """``last_checkpoint.json``: ``{"path", "epoch", "global_step", "kept"}``, or None."""
        path = self.file(LAST_CHECKPOINT)
        return read_json(path, "resume pointer") if os.path.isfile(path) else None

    def resume_path(self) -> str:
        """The checkpoint ``--resume auto`` continues from."""
        pointer = self.pointer()
        if pointer is None:
            raise FileNotFoundError(
                f"--resume auto: no {LAST_CHECKPOINT} in {self.path}; nothing to resume "
                f"(start without --resume, or pass a checkpoint path)"
            )
        return pointer["path"]

    def kept_checkpoints(self) -> list:
        pointer = self.pointer() or {}
        return [k for k in pointer.get("kept", []) if os.path.isfile(k)]

    def holds_run(self) -> bool:
        """Whether a run wrote here already (its config, metrics, resume pointer or checkpoints)."""
        if not os.path.isdir(self.path):
            return False
        names = os.listdir(self.path)
        return any(n in (CONFIG, METRICS, LAST_CHECKPOINT) or n.endswith(".ckpt") for n in names)

    def next_free(self) -> "RunDir":
        """``<path>-1``, ``<path>-2``, ...: the first that does not exist, created here (``mkdir`` is
        atomic, so two runs started at once never share one)."""
        for n in range(1, 10_000):
            candidate = f"{self.path}-{n}"
            try:
                os.makedirs(candidate)
            except FileExistsError:
                continue
            return RunDir(candidate)
        raise FileExistsError(f"no free run directory next to {self.path} (tried -1 to -9999)")

    # ------------------------------------------------------------------ checkpoints
    def best_checkpoint(self, model: str) -> str:
        return self.file(f"{model}-best.ckpt")

    def save_epoch_checkpoint(
        self,
        params,
        model: str,
        epoch: int,
        step: int,
        state: dict,
        kept: list,
        keep_max: int,
        policy: str = "latest_k",
        score: Optional[float] = None,
    ) -> list:
        """Save the epoch checkpoint, point ``last_checkpoint.json`` at it, then drop what the policy
        does not keep; returns the kept list.

        ``latest_k`` keeps the ``keep_max`` newest; ``top_k`` the ``keep_max`` best by ``score``
        (val top-1; epochs without one rank last) and always the newest too, which is what
        ``--resume auto`` continues from. The pointer is written before the deletions: a crash in
        between leaves a stray file, never a pointer to a deleted checkpoint."""
        if policy not in SAVE_POLICIES:
            raise ValueError(f"ckpt_save_policy {policy!r} is not one of {', '.join(SAVE_POLICIES)}")
        path = self.file(f"{model}-{epoch}_{step}.ckpt")
        save_checkpoint(params, path, append_dict=state)
        scores = {k: v for k, v in ((self.pointer() or {}).get("scores") or {}).items() if k in kept}
        scores[path] = score
        kept = [k for k in kept if k != path] + [path]
        if policy == "top_k":
            ranked = sorted(kept, key=lambda k: (scores.get(k) is not None, scores.get(k) or 0.0), reverse=True)
            keep = set(ranked[:keep_max]) | {path}
        else:
            keep = set(kept[-keep_max:])
        removed = [k for k in kept if k not in keep]
        kept = [k for k in kept if k in keep]
        pointer = {
            "path": path,
            "epoch": epoch,
            "global_step": step,
            "kept": kept,
            "scores": {k: scores.get(k) for k in kept},
        }
        write_json(self.file(LAST_CHECKPOINT), pointer, "resume pointer")
        for old in removed:
            if os.path.exists(old):
                os.remove(old)
        return kept

    def save_best(self, params, model: str, state: dict) -> str:
        return save_checkpoint(params, self.best_checkpoint(model), append_dict=state)
