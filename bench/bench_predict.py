"""End-to-end prediction throughput (graph + model forward) of E3Relax on the CPU, structures/s.

    python bench/bench_predict.py [--smoke] [--preset small paper] [--count 200] [--json FILE]

Compares batch size 1 (the research code's way) with batched inference in the same run, for each
backend available; the ratio is batched / one-at-a-time throughput.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bench_parser, environment, median_time, write_json_lines  # noqa: E402
from problems import small_crystals  # noqa: E402

from e3relax_fast import E3Relax, E3RelaxConfig  # noqa: E402
from e3relax_fast.testing import flat_batch  # noqa: E402


def throughput(model: E3Relax, crystals: list, batch_size: int, repeats: int) -> float:
    batches = [flat_batch(crystals[i:i + batch_size], dtype=torch.float32)
               for i in range(0, len(crystals), batch_size)]

    @torch.no_grad()
    def run() -> None:
        for batch in batches:
            model(*batch)
    return len(crystals) / median_time(run, repeats)


def main(argv=None) -> int:
    parser = bench_parser(__doc__, count=64)
    args = parser.parse_args(argv)
    count, repeats = (4, 1) if args.smoke else (args.count, args.repeats)
    presets = ["small"] if args.smoke else args.preset
    crystals = small_crystals(count).crystals
    rows = []
    for preset in presets:
        torch.manual_seed(0)
        model = E3Relax(E3RelaxConfig.preset(preset)).eval()
        single = throughput(model, crystals, 1, repeats)
        batched = throughput(model, crystals, args.batch_size, repeats)
        print(f"{preset}: {count} crystals, batch 1: {single:.2f} structures/s, batch {args.batch_size}: "
              f"{batched:.2f} structures/s ({batched / single:.2f}x)")
        rows.append({"bench": "predict", "preset": preset, "crystals": count, "batch_1_per_s": single,
                     "batched_per_s": batched, "batch_size": args.batch_size, "ratio": batched / single,
                     "backend": "auto", "smoke": args.smoke, **environment()})
    write_json_lines(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
