"""``e3relax curve``: a training run's learning curve, from its folder or a run snapshot, as a figure
and as a Markdown table (e3relax_fast/train/curve.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "a training run's validation curve (per-source ratios to Dummy) as a figure and a table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder (its metrics.jsonl) or a run snapshot (scripts/snapshot_run.py)")
    parser.add_argument("-o", "--output", help="figure to write (.png, .svg or .pdf)")
    parser.add_argument("--x", choices=("hours", "step"), default="hours",
                        help="the horizontal axis: wall-clock hours of training or optimiser steps")
    parser.add_argument("--markdown", action="store_true", help="print the curve as a Markdown table")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="keep every N-th validation in the table and figure (the last one always)")


def run(args: argparse.Namespace) -> int:
    from ..train.curve import curve_events, curve_frame, markdown_table, read_curve

    if not args.output and not args.markdown:
        raise ValueError("nothing to do: give -o FIGURE, --markdown or both")
    if args.every < 1:
        raise ValueError(f"--every must be at least 1, got {args.every}")
    if args.output and Path(args.output).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"-o {args.output}: the figure's name must end in .png, .svg or .pdf")
    if args.output and Path(args.output).resolve() == Path(args.run).resolve():
        raise ValueError(f"-o {args.output} is the run snapshot given: refusing to write over it")
    records = read_curve(args.run)
    frame = curve_frame(records)
    keep = [i for i in range(len(frame)) if i % args.every == 0 or i == len(frame) - 1]
    frame = frame.iloc[keep].reset_index(drop=True)
    if args.markdown:
        print(markdown_table(frame))
    if args.output:
        from ..plots import plot_learning_curve

        path = plot_learning_curve(frame, curve_events(records), args.output, x=args.x)
        print(f"wrote {path}: {len(frame)} validations to step {int(frame['step'].iloc[-1]):,}")
    return 0
