"""Write a run snapshot: what a training run needs to go on on another machine, small enough to commit.

    python scripts/snapshot_run.py runs/release4 -o snapshots/release4.ckpt

``runs/`` dies with its machine, and a machine is not always handed to the next session. A snapshot
(e3relax_fast/train/snapshot.py) holds the run's EMA weights in float16, its step, schedule cycle,
hours and validation curve (10.8 MB for the ``small`` model); ``scripts/train_release4.sh`` starts a
fresh machine's run from ``snapshots/release4.ckpt`` (``e3relax train --continue-from``) instead of
from release 3. It reads ``last.ckpt`` only, so it may run while the run trains (the trainer replaces
that file atomically). docs/training.md, "Carrying a run to another machine".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e3relax_fast.train.snapshot import write_run_snapshot  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the run folder (its last.ckpt and metrics.jsonl are read)")
    parser.add_argument("-o", "--out", required=True, help="the snapshot file to write (replaced atomically)")
    args = parser.parse_args(argv)
    snapshot = write_run_snapshot(args.run_dir, args.out)
    size = Path(args.out).stat().st_size / 2 ** 20
    print(f"{args.out}: step {snapshot['state']['step']}, {snapshot['wall_s'] / 3600:.2f} h of training, "
          f"{sum('val_score' in r for r in snapshot['curve'])} validations, {size:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
