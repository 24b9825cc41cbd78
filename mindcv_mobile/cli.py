"""What the entry points share: turning expected failures into one-line errors."""
from __future__ import annotations

import os
import sys
from typing import Callable

# Failures a user can fix from the message (bad path, bad value, no launcher, diverged loss);
# anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, RuntimeError, FloatingPointError)


def run_main(main: Callable[[], int], prog: str) -> int:
    """Run ``main()``; print expected errors as ``prog: error: message`` and return 2.
    ``MINDCV_MOBILE_DEBUG=1`` shows the traceback too."""
    try:
        return main()
    except USER_ERRORS as err:
        if os.environ.get("MINDCV_MOBILE_DEBUG"):
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
