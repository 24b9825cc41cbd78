"""Test helper started by msrun (tests/tasks/test_distributed.py): train.py plus what a test must see.

Takes train.py's command line and calls ``mindcv_mobile.tasks.train`` unchanged; then, in
``$DIST_TEST_OUT``, each rank writes

* ``rank<k>_weights.npz``: every parameter of its network after training (BN statistics too),
* ``rank<k>_samples.json``: per epoch, the training-set row indices its shard sampler yielded.

A fault can be injected on one rank, to test that a dead worker ends the job (the hook lives here,
not in the package): ``DIST_TEST_FAIL_RANK=<k>``, ``DIST_TEST_FAIL_STEP=<global step>`` and
``DIST_TEST_FAIL_MODE=raise`` (a Python exception) or ``kill`` (SIGKILL, no chance to clean up).
"""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import mindcv_mobile  # noqa: E402,F401  (first: CPU ISA default before MindSpore loads)
from mindcv_mobile import build  # noqa: E402
from mindcv_mobile.cli import (
    parse_args,  # noqa: E402
    run_main,  # noqa: E402
)
from mindcv_mobile.data import sampler  # noqa: E402  (the module of ShardSampler)
from mindcv_mobile.tasks import train  # noqa: E402
from mindcv_mobile.training import callbacks  # noqa: E402

_epochs: list = []  # indices yielded by the training shard sampler, one list per epoch
_nets: list = []


def _record_train_sampler() -> None:
    original = sampler.ShardSampler.__iter__

    def recording_iter(self):
        order = list(original(self))
        if self.shuffle:  # the training split; validation is read unshuffled
            _epochs.append(order)
        return iter(order)

    sampler.ShardSampler.__iter__ = recording_iter


def _capture_network() -> None:
    original = build.create_model

    def capturing_create_model(*args, **kwargs):
        net = original(*args, **kwargs)
        _nets.append(net)
        return net

    build.create_model = capturing_create_model


def _inject_fault(rank: int) -> None:
    if os.environ.get("DIST_TEST_FAIL_RANK") != str(rank):
        return
    at_step = int(os.environ.get("DIST_TEST_FAIL_STEP", "3"))
    mode = os.environ.get("DIST_TEST_FAIL_MODE", "raise")
    original = callbacks.TrainMonitor.on_train_step_end

    def failing_step_end(self, run_context):
        original(self, run_context)
        if self._global_step(run_context.original_args()) == at_step:
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"fault injected by the test at step {at_step}")

    callbacks.TrainMonitor.on_train_step_end = failing_step_end


def main(argv=None) -> int:
    cfg, _ = parse_args(argv, description="train.py with per-rank dumps for tests")
    out = os.environ["DIST_TEST_OUT"]
    rank = int(os.environ.get("RANK_ID", "0"))
    _record_train_sampler()
    _capture_network()
    _inject_fault(rank)
    result = train(cfg)
    from mindspore.communication import get_rank

    rank = get_rank()
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, f"rank{rank}_weights.npz"), **{p.name: p.asnumpy() for p in _nets[-1].get_parameters()})
    with open(os.path.join(out, f"rank{rank}_samples.json"), "w", encoding="utf-8") as f:
        json.dump({"epochs": _epochs, "history": result.history}, f)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "dist_worker.py"))
