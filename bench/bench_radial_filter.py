"""The edge filter on the radial basis, fused and banded (``radial_filter``, cpp) against the reference
(materialised [E, M] basis + matrix product), forward and forward + backward, on this CPU.

    python bench/bench_radial_filter.py [--smoke] [--count 400000 (edges)] [--json FILE]

E3Relax sizes: M = 128 Gaussians to 30 Å, O = 3F outputs (384 for the small model, 1536 for the
paper's), edge lengths 0.5-8 Å as in the 6 Å graphs the model moves. Both in one run; ratios are
reference time / fused time.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bench_parser, environment, median_time, write_json_lines  # noqa: E402

from e3relax_fast.ops import radial_filter  # noqa: E402


def main(argv=None) -> int:
    parser = bench_parser(__doc__, count=400_000, batched=False, count_help="edges")
    args = parser.parse_args(argv)
    edges = 2000 if args.smoke else args.count
    rows = []
    for channels in ([384] if args.smoke else [384, 1536]):
        g = torch.Generator().manual_seed(0)
        distance = torch.rand(edges, generator=g) * 7.5 + 0.5
        weight = torch.randn(channels, 128, generator=g) / 128 ** 0.5
        bias = torch.randn(channels, generator=g)
        grad_out = torch.randn(edges, channels, generator=g)
        times = {}
        for backend in ("torch", "cpp"):
            def forward() -> None:
                with torch.no_grad():
                    radial_filter(distance, weight, bias, 30.0, 5, backend=backend)

            def forward_backward() -> None:
                args_ = [t.clone().requires_grad_(True) for t in (distance, weight, bias)]
                radial_filter(*args_, 30.0, 5, backend=backend).backward(grad_out)

            repeats = 1 if args.smoke else 3
            times[backend] = (median_time(forward, repeats), median_time(forward_backward, repeats))
        row = {"bench": "radial_filter", "smoke": args.smoke, "edges": edges, "outputs": channels,
               "forward_s": {b: t[0] for b, t in times.items()}, "forward_backward_s": {b: t[1] for b, t in times.items()},
               "forward_ratio": times["torch"][0] / times["cpp"][0],
               "forward_backward_ratio": times["torch"][1] / times["cpp"][1], **environment()}
        rows.append(row)
        print(f"E={edges} O={channels}: forward {times['torch'][0]*1e3:.0f} -> {times['cpp'][0]*1e3:.0f} ms "
              f"({row['forward_ratio']:.1f}x); forward+backward {times['torch'][1]*1e3:.0f} -> "
              f"{times['cpp'][1]*1e3:.0f} ms ({row['forward_backward_ratio']:.1f}x)", flush=True)
    write_json_lines(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
