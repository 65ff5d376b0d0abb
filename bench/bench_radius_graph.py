"""Periodic radius graph: our backends against vesin, matscipy, pymatgen and ASE, side by side.

    python bench/bench_radius_graph.py [--smoke] [--problem small fcc20k fcc100k] [--cutoff 5 6]
                                       [--memory] [--json bench/results/radius_graph.jsonl]

Every library is asked for the same information our op returns (i, j and the integer cell shift of
every pair: ``"ijS"`` for vesin, matscipy and ASE; pymatgen's ``find_points_in_spheres`` returns that
and more), and its pair count is checked against ours before its time is reported. Ratios are
``library time / fastest competitor's time`` (below 1 is faster). Our op runs on all torch threads and
on one (``e3relax:cpp/1t``), since the competitors run on one thread. The pure-PyTorch reference is
brute force over images (quadratic per structure), so it only runs where that is affordable.
``--memory`` also runs each implementation once in a fresh process and reports its peak RSS growth
over the inputs, in bytes per pair (the output alone is 40: two int64 indices and three int64 shifts).
On many-structure problems the competitors, called once per structure, hold one structure's output at
a time while ours holds the whole batch's: compare bytes per pair on the single-cell problems.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import environment, median_time, peak_rss_bytes, write_json_lines  # noqa: E402
from problems import PROBLEMS, Problem  # noqa: E402

from e3relax_fast.ops import backend_report, radius_graph  # noqa: E402
from e3relax_fast.testing import flat_batch  # noqa: E402

REFERENCE_MAX_ATOMS = 2_000  # per structure; beyond this the brute-force reference is not timed
OURS = ("e3relax:torch", "e3relax:cpp", "e3relax:cpp/1t", "e3relax:cuda")


def competitors() -> dict:
    """name -> function(problem) -> number of pairs, for every installed library."""
    found = {}
    try:
        from vesin import NeighborList

        def run_vesin(problem: Problem) -> int:
            calculator = NeighborList(cutoff=problem.cutoff, full_list=True)
            return sum(len(calculator.compute(p, c, True, "ijS")[0]) for p, _, c in problem.crystals)
        found["vesin"] = run_vesin
    except ImportError:
        pass
    try:
        from matscipy.neighbours import neighbour_list

        def run_matscipy(problem: Problem) -> int:
            return sum(len(neighbour_list("ijS", positions=p, cell=c, pbc=[True] * 3, cutoff=problem.cutoff)[0])
                       for p, _, c in problem.crystals)
        found["matscipy"] = run_matscipy
    except ImportError:
        pass
    try:
        from pymatgen.optimization.neighbors import find_points_in_spheres

        def run_pymatgen(problem: Problem) -> int:
            pbc = np.ones(3, dtype=np.int64)
            return sum(len(find_points_in_spheres(p, p, problem.cutoff, pbc, c, tol=1e-8)[0]) - len(p)
                       for p, _, c in problem.crystals)  # it lists each atom with itself: drop those
        found["pymatgen"] = run_pymatgen
    except ImportError:
        pass
    try:
        from ase import Atoms
        from ase.neighborlist import neighbor_list

        def run_ase(problem: Problem) -> int:
            return sum(len(neighbor_list("ijS", Atoms(positions=p, cell=c, pbc=True), problem.cutoff)[0])
                       for p, _, c in problem.crystals)
        found["ase"] = run_ase
    except ImportError:
        pass
    return found


def _single_threaded(fn):
    def run():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(threads)
    return run


def our_backends(problem: Problem) -> dict:
    pos, _, cell, pbc, ptr = flat_batch(problem.crystals)
    available = [e.backend for e in backend_report()["radius_graph"] if e.available and e.backend in ("torch", "cpp", "cuda")]
    largest = max(len(z) for _, z, _ in problem.crystals)
    runs = {}
    for backend in available:
        if backend == "torch" and largest > REFERENCE_MAX_ATOMS:
            continue
        if backend == "cuda":  # inputs already on the GPU (a screening pipeline's case); .item() syncs
            on_gpu = [t.cuda() for t in (pos, cell, pbc, ptr)]
            runs["e3relax:cuda"] = lambda g=on_gpu: int(radius_graph(*g, problem.cutoff, backend="cuda")[2].sum())
            continue
        runs[f"e3relax:{backend}"] = (
            lambda backend=backend: int(radius_graph(pos, cell, pbc, ptr, problem.cutoff, backend=backend)[2].sum()))
    if "e3relax:cpp" in runs:
        runs["e3relax:cpp/1t"] = _single_threaded(runs["e3relax:cpp"])
    return runs


def runners_for(problem: Problem, skip) -> dict:
    return {**our_backends(problem),
            **{k: (lambda f=f: f(problem)) for k, f in competitors().items() if k not in skip}}


def peak_memory_child(problem_name: str, cutoff: float, smoke: bool, label: str) -> dict:
    """Runs in a fresh process: the peak RSS growth of one call over the inputs already built."""
    problem = PROBLEMS[problem_name](smoke, cutoff)
    run = runners_for(problem, skip=())[label]
    base = peak_rss_bytes()  # a high-water mark: the inputs are built
    pairs = run()
    growth = peak_rss_bytes() - base
    return {"pairs": pairs, "peak_rss_growth_bytes": growth}


def peak_memory(problem_name: str, cutoff: float, smoke: bool, label: str) -> dict:
    spec = json.dumps([problem_name, cutoff, smoke, label])
    proc = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory run of {label} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny problems, one repeat: seconds, for CI")
    parser.add_argument("--problem", nargs="+", default=["small", "fcc20k", "fcc100k"], choices=list(PROBLEMS))
    parser.add_argument("--cutoff", nargs="+", type=float, default=[5.0, 6.0], help="Å")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip", nargs="*", default=["ase"], help="libraries not to time (ASE is ~100x slower)")
    parser.add_argument("--memory", action="store_true", help="also peak RSS growth, one fresh process per run")
    parser.add_argument("--json", help="append JSON lines here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(peak_memory_child(*json.loads(args.child))))
        return 0
    repeats = 1 if args.smoke else args.repeats
    rows = []
    failed = False
    for name in args.problem:
        for cutoff in args.cutoff:
            problem = PROBLEMS[name](args.smoke, cutoff)
            runners = runners_for(problem, args.skip)
            counts = {label: fn() for label, fn in runners.items()}
            # the oracle where it runs, else vesin, else our CPU kernel (a GPU machine without vesin)
            expected = next(counts[k] for k in ("e3relax:torch", "vesin", "e3relax:cpp") if k in counts)
            times = {label: median_time(fn, repeats, warmup=0 if args.smoke else 1) for label, fn in runners.items()}
            rivals = {label: t for label, t in times.items() if label not in OURS}
            fastest = min(rivals, key=rivals.get) if rivals else None
            print(f"{problem.name}: {len(problem.crystals)} structures, {problem.num_atoms} atoms, "
                  f"cutoff {cutoff} Å, {expected} pairs; ratios to the fastest competitor ({fastest})")
            for label, seconds in times.items():
                ratio = seconds / rivals[fastest] if fastest else float("nan")
                agrees = counts[label] == expected
                row = {"bench": "radius_graph", "problem": problem.name, "cutoff": cutoff, "impl": label,
                       "median_s": seconds, "fastest_competitor": fastest, "ratio_to_fastest_competitor": ratio,
                       "pairs": counts[label], "pairs_agree": agrees, "smoke": args.smoke, **environment()}
                memory = ""
                if args.memory:
                    measured = peak_memory(name, cutoff, args.smoke, label)
                    per_pair = measured["peak_rss_growth_bytes"] / max(1, measured["pairs"])
                    row["peak_rss_growth_bytes_per_pair"] = per_pair
                    memory = f"  peak +{measured['peak_rss_growth_bytes'] / 2**20:7.1f} MB ({per_pair:5.1f} B/pair)"
                print(f"  {label:<15} {seconds:9.4f} s  {ratio:6.2f}x  pairs {counts[label]}"
                      f"{'' if agrees else '  MISMATCH'}{memory}")
                rows.append(row)
            failed |= not all(counts[label] == expected for label in counts)
    write_json_lines(args.json, rows)
    if failed:
        print("pair counts disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
