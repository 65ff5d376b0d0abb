"""The test seam for kills mid-write (tests/cli/test_predict_failures.py): runs the e3relax command line
in this process and kills it with SIGKILL, as the OOM killer or a scheduler would, at a chosen step.

    python tests/cli/killed_predict.py frame:N predict ...   # right after the N-th structure is written,
                                                             # before its report row
    python tests/cli/killed_predict.py row:N predict ...     # right after the N-th report row

The steps are found by wrapping, in this process only, the two calls ``e3relax predict`` makes at them:
``StructureWriter.write`` (e3relax_fast/io/writers.py) and ``OutputLock.renew``, which predict calls once
after each report row is flushed (e3relax_fast/cli/predict.py). Production code holds no hook.
"""

import functools
import os
import signal
import sys

from e3relax_fast.cli import main
from e3relax_fast.io.outputs import OutputLock
from e3relax_fast.io.writers import StructureWriter


def kill_after_call(owner: type, name: str, count: int) -> None:
    """Replace ``owner.name`` by a wrapper that kills this process when its ``count``-th call returns."""
    original = getattr(owner, name)
    calls = [0]

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        value = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == count:
            os.kill(os.getpid(), signal.SIGKILL)
        return value

    setattr(owner, name, wrapper)


if __name__ == "__main__":
    step, count = sys.argv[1].split(":")
    owner, name = {"frame": (StructureWriter, "write"), "row": (OutputLock, "renew")}[step]
    kill_after_call(owner, name, int(count))
    sys.exit(main(sys.argv[2:]))
