"""Fused vector_message against the reference (index_select + index_add_), forward and forward+backward.

    python bench/bench_vector_message.py [--smoke] [--atoms 2000 20000] [--channels 128 512] [--json FILE]

Random graphs with 56 edges per atom (the paper's 50 neighbours + 6 self-image edges), sorted by
target. Every (size, backend, pass) runs in a fresh subprocess so that its peak RSS growth over the
inputs is its own; times are medians. Ratios are reference / fused, measured in the same run.
Configurations whose reference intermediates would not fit in --max-gb are skipped and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import environment, peak_rss_bytes, write_json_lines  # noqa: E402

EDGES_PER_ATOM = 56


def measure(atoms: int, channels: int, backend: str, backward: bool, repeats: int) -> dict:
    """Runs inside the subprocess: build inputs, note RSS, time the op, report peak growth."""
    import time

    import torch

    from e3relax_fast.ops import message_graph, vector_message

    g = torch.Generator().manual_seed(0)
    edges = atoms * EDGES_PER_ATOM
    target = torch.arange(atoms).repeat_interleave(EDGES_PER_ATOM)
    source = torch.randint(0, atoms, (edges,), generator=g)
    edge_index = torch.stack([source, target])
    phi = torch.randn(atoms, 3 * channels, generator=g)
    w = torch.randn(edges, 3 * channels, generator=g)
    vec = torch.randn(atoms, 3, channels, generator=g)
    unit = torch.nn.functional.normalize(torch.randn(edges, 3, generator=g), dim=1)
    graph_arrays = message_graph(edge_index, atoms)
    tensors = [phi, w, vec, unit]
    if backward:
        tensors = [t.requires_grad_(True) for t in tensors]

    def run() -> None:
        dh, dvec = vector_message(*tensors, edge_index, backend=backend, message_graph=graph_arrays)
        if backward:
            (dh.sum() + dvec.sum()).backward()
            for t in tensors:
                t.grad = None

    base = peak_rss_bytes()  # inputs only; a high-water mark
    run()  # warm-up (its peak counts: every run allocates the same)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    peak_growth = (peak_rss_bytes() - base) / 2**20
    return {"seconds": sorted(times)[len(times) // 2], "peak_rss_growth_mb": peak_growth}


def reference_bytes(atoms: int, channels: int) -> int:
    edges = atoms * EDGES_PER_ATOM
    return 4 * edges * 3 * channels * 6  # gathered phi, message, gathered vec, vector message, grads


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--atoms", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--backend", nargs="+", default=["torch", "cpp"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-gb", type=float, default=12.0)
    parser.add_argument("--json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return 0
    sizes = [(50, 8)] if args.smoke else [(n, f) for n in args.atoms for f in args.channels]
    repeats = 1 if args.smoke else args.repeats
    rows = []
    for atoms, channels in sizes:
        if reference_bytes(atoms, channels) > args.max_gb * 2 ** 30:
            print(f"N={atoms} F={channels}: skipped, the reference needs ~{reference_bytes(atoms, channels) / 2**30:.0f} "
                  f"GB (> --max-gb {args.max_gb})")
            continue
        for backward in (False, True):
            results = {}
            for backend in args.backend:
                spec = json.dumps({"atoms": atoms, "channels": channels, "backend": backend, "backward": backward,
                                   "repeats": repeats})
                proc = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"N={atoms} F={channels} {backend}: failed\n{proc.stderr[-2000:]}")
                    continue
                results[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
            if "torch" not in results:
                continue
            ref = results["torch"]
            label = "fwd+bwd" if backward else "fwd"
            for backend, r in results.items():
                speedup = ref["seconds"] / r["seconds"]
                memory = r["peak_rss_growth_mb"] / ref["peak_rss_growth_mb"] if ref["peak_rss_growth_mb"] > 0 else float("nan")
                print(f"N={atoms:6d} F={channels:4d} {label:8s} {backend:6s} {r['seconds'] * 1e3:9.1f} ms "
                      f"({speedup:5.2f}x faster than torch)  peak RSS +{r['peak_rss_growth_mb']:7.0f} MB "
                      f"({memory:.2f} of torch)")
                rows.append({"bench": "vector_message", "atoms": atoms, "channels": channels, "pass": label,
                             "backend": backend, "seconds": r["seconds"], "speedup_vs_torch": speedup,
                             "peak_rss_growth_mb": r["peak_rss_growth_mb"], "memory_vs_torch": memory,
                             "edges_per_atom": EDGES_PER_ATOM, "smoke": args.smoke, **environment()})
    write_json_lines(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
