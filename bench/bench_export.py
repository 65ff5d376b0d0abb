"""Deployed artifacts against the eager model on the CPU: structures/s and startup time.

    python bench/bench_export.py [--smoke] [--preset small paper] [--count 64] [--no-aoti] [--json FILE]

One run exports the same (randomly initialised, float32) model as TorchScript with the compiled ops,
TorchScript with the reference ops, and an AOTInductor package, then relaxes the same crystals of
4-64 atoms (graph included) in batches of 16 with each. Startup is the time from loading the file to
the first prediction of one batch, in a fresh process (first-call overheads included). Ratios are
against the eager model with the compiled ops, measured in the same run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bench_parser, environment, median_time, write_json_lines  # noqa: E402
from problems import small_crystals  # noqa: E402

from e3relax_fast import E3Relax, E3RelaxConfig  # noqa: E402
from e3relax_fast.export import export_aoti, export_torchscript, load_aoti, load_scripted  # noqa: E402
from e3relax_fast.testing import flat_batch  # noqa: E402

STARTUP = """
import sys, time, torch
start = time.perf_counter()
from e3relax_fast.export import load_aoti, load_scripted
path = sys.argv[1]
model = load_aoti(path)[0] if path.endswith(".pt2") else load_scripted(path)[0]
batch = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    model(*batch)
print(time.perf_counter() - start)
"""


def throughput(run_batch, batches: list, count: int, repeats: int) -> float:
    @torch.no_grad()
    def run() -> None:
        for batch in batches:
            run_batch(*batch)
    return count / median_time(run, repeats)


def startup_seconds(path: str, batch_file: str) -> float:
    result = subprocess.run([sys.executable, "-c", STARTUP, path, batch_file], capture_output=True, text=True,
                            timeout=600, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = bench_parser(__doc__, count=64)
    parser.add_argument("--no-aoti", action="store_true", help="skip the AOTInductor package (minutes to compile)")
    args = parser.parse_args(argv)
    count, repeats = (4, 1) if args.smoke else (args.count, args.repeats)
    crystals = small_crystals(count).crystals
    batches = [flat_batch(crystals[i:i + args.batch_size], dtype=torch.float32)
               for i in range(0, len(crystals), args.batch_size)]
    rows = []
    for preset in (["small"] if args.smoke else args.preset):
        torch.manual_seed(0)
        config = E3RelaxConfig.preset(preset)
        if args.smoke:
            config = E3RelaxConfig.from_dict({**config.to_dict(), "num_layers": 1, "hidden_channels": 16,
                                              "num_rbf": 8})
        model = E3Relax(config).eval()
        with tempfile.TemporaryDirectory() as tmp:
            batch_file = os.path.join(tmp, "batch.pt")
            torch.save(list(batches[0]), batch_file)
            variants = {"eager": (lambda *b: model(*b), None, 0.0)}
            for ops in ("compiled", "reference"):
                path = os.path.join(tmp, f"{ops}.ts.pt")
                export_torchscript(model, path, ops=ops)
                variants[f"torchscript:{ops}"] = (load_scripted(path)[0], path, 0.0)
            if not (args.no_aoti or args.smoke):  # smoke: the suite's AOTI test already compiles one
                path = os.path.join(tmp, "model.pt2")
                started = time.perf_counter()
                export_aoti(model, path)
                variants["aoti"] = (load_aoti(path)[0], path, time.perf_counter() - started)
            eager_rate = None
            for name, (runner, path, export_s) in variants.items():
                rate = throughput(runner, batches, count, repeats)
                eager_rate = eager_rate or rate
                row = {"bench": "export", "smoke": args.smoke, "preset": preset, "artifact": name,
                       "crystals": count, "batch_size": args.batch_size, "structures_per_s": rate,
                       "ratio_vs_eager": rate / eager_rate,
                       "startup_s": startup_seconds(path, batch_file) if path else None,
                       "export_s": export_s or None, **environment()}
                rows.append(row)
                startup = f"{row['startup_s']:.2f} s" if path else "-"
                print(f"{preset:6s} {name:22s} {rate:8.1f} structures/s  x{row['ratio_vs_eager']:.2f}  "
                      f"startup {startup}", flush=True)
    write_json_lines(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
