"""train.py that SIGKILLs itself after global step KILL_AT_STEP (a test helper, not shipped).

Used by tests/tasks/test_resume.py to interrupt a run in the middle of an epoch the way a cluster
pre-emption or OOM killer would: no exception, no cleanup, no chance to save.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mindcv_mobile  # noqa: E402,F401
from mindcv_mobile.training import callbacks  # noqa: E402

KILL_AT = int(os.environ["KILL_AT_STEP"])
_step_end = callbacks.TrainMonitor.on_train_step_end


def on_train_step_end(self, run_context):
    _step_end(self, run_context)
    if self._global_step(run_context.original_args()) >= KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


callbacks.TrainMonitor.on_train_step_end = on_train_step_end

if __name__ == "__main__":
    import runpy

    sys.argv[0] = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
