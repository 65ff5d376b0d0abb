"""Periodic radius graph: our backends against vesin, matscipy, pymatgen and ASE, side by side.

    python bench/bench_radius_graph.py [--smoke] [--problem small fcc] [--json bench/results/radius_graph.jsonl]

Every library's pair count is checked against ours before its time is reported; ratios are
``library time / vesin time`` (below 1 is faster than vesin). The pure-PyTorch reference is brute force
over images (quadratic per structure), so it only runs where that is affordable.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, median_time, write_json_lines  # noqa: E402
from problems import PROBLEMS, Problem  # noqa: E402

from e3relax_fast.ops import backend_report, radius_graph  # noqa: E402
from e3relax_fast.testing import flat_batch  # noqa: E402

REFERENCE_MAX_ATOMS = 2_000  # per structure; beyond this the brute-force reference is not timed


def competitors() -> dict:
    found = {}
    try:
        from vesin import NeighborList

        def run_vesin(problem: Problem) -> int:
            calculator = NeighborList(cutoff=problem.cutoff, full_list=True)
            return sum(len(calculator.compute(p, c, True, "i")[0]) for p, _, c in problem.crystals)
        found["vesin"] = run_vesin
    except ImportError:
        pass
    try:
        from matscipy.neighbours import neighbour_list

        def run_matscipy(problem: Problem) -> int:
            return sum(len(neighbour_list("i", positions=p, cell=c, pbc=[True] * 3, cutoff=problem.cutoff))
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
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    def run_ase(problem: Problem) -> int:
        return sum(len(neighbor_list("i", Atoms(positions=p, cell=c, pbc=True), problem.cutoff))
                   for p, _, c in problem.crystals)
    found["ase"] = run_ase
    return found


def our_backends(problem: Problem) -> dict:
    pos, _, cell, pbc, ptr = flat_batch(problem.crystals)
    available = [e.backend for e in backend_report()["radius_graph"] if e.available and e.backend in ("torch", "cpp")]
    largest = max(len(z) for _, z, _ in problem.crystals)
    runs = {}
    for backend in available:
        if backend == "torch" and largest > REFERENCE_MAX_ATOMS:
            continue
        runs[f"e3relax:{backend}"] = (
            lambda backend=backend: int(radius_graph(pos, cell, pbc, ptr, problem.cutoff, backend=backend)[2].sum()))
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny problems, one repeat: seconds, for CI")
    parser.add_argument("--problem", nargs="+", default=["small", "fcc"], choices=list(PROBLEMS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=["ase"], help="libraries not to time (ASE is ~100x slower)")
    parser.add_argument("--json", help="append JSON lines here")
    args = parser.parse_args(argv)
    repeats = 1 if args.smoke else args.repeats
    rows = []
    for name in args.problem:
        problem = PROBLEMS[name](args.smoke)
        runners = {**our_backends(problem),
                   **{k: (lambda f=f: f(problem)) for k, f in competitors().items() if k not in args.skip}}
        counts = {label: fn() for label, fn in runners.items()}
        expected = counts.get("e3relax:torch", counts.get("vesin"))
        times = {label: median_time(fn, repeats, warmup=0) for label, fn in runners.items()}
        baseline = times.get("vesin")
        print(f"{problem.name}: {len(problem.crystals)} structures, {problem.num_atoms} atoms, "
              f"cutoff {problem.cutoff} Å, {expected} pairs")
        for label, seconds in times.items():
            ratio = seconds / baseline if baseline else float("nan")
            agrees = counts[label] == expected
            print(f"  {label:<15} {seconds:9.4f} s  {ratio:7.2f}x vesin  pairs {counts[label]}"
                  f"{'' if agrees else '  MISMATCH'}")
            rows.append({"bench": "radius_graph", "problem": problem.name, "impl": label, "median_s": seconds,
                         "ratio_to_vesin": ratio, "pairs": counts[label], "pairs_agree": agrees,
                         "smoke": args.smoke, **environment()})
        if not all(counts[label] == expected for label in counts):
            print("pair counts disagree", file=sys.stderr)
            write_json_lines(args.json, rows)
            return 1
    write_json_lines(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
