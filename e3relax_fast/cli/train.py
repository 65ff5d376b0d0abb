"""``e3relax train``: layer-wise supervised training from a YAML config with dotted overrides.

Under ``torchrun --nproc_per_node K -m e3relax_fast.cli train ...`` it runs DDP (gloo on CPU, NCCL on
CUDA); rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "train E3Relax on a preprocessed pair store (YAML config + --set overrides; torchrun for DDP)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training config YAML (sections model, data, optim, run)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in run.dir from its last.ckpt")
    parser.add_argument("--new-data", action="store_true",
                        help="with --resume: the data.* settings may have changed (a store with more pairs, other "
                             "draws); the weights, optimiser and schedule go on, changed data from a fresh pass")
    parser.add_argument("--continue-from", metavar="SNAPSHOT", default=None,
                        help="start an empty run.dir from a run snapshot (scripts/snapshot_run.py): its weights, "
                             "step, schedule, hours and curve go on, with a fresh optimiser re-warmed over "
                             "optim.warmup_steps")


def run(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train

    config = TrainConfig.from_yaml(args.config, args.overrides)
    summary = train(config, resume=args.resume, new_data=args.new_data, continue_from=args.continue_from)
    if summary is not None:
        print(json.dumps(summary), file=sys.stdout)
    return 0
