"""Screening throughput: ``E3Relaxer.relax_many`` against the research code's way and against CHGNet.

    python bench/bench_screening.py [--smoke] [--preset small paper] [--count 1000]
        [--matmul-precision float32 bfloat16] [--json FILE]
        [--chgnet-python runs/genvenv/bin/python --chgnet-count 30]
    python bench/bench_screening.py --compare runs/release2.ckpt e3relax_fast/pretrained/e3relax-small.ckpt
    python bench/bench_screening.py --compare e3relax-small --symprec 0.01 none
    python bench/bench_screening.py --compare CKPT --confidence single-pass rerun

Workload: ``count`` real crystals of 4-64 atoms, deterministic: the unrelaxed sides of the shared
CHGNet prototype pairs (``../shared/data/chgnet_pairs``), each repeated along its first axis to a
random size in 4-64 atoms (``--smoke``: the 20 example CIFs). Three ways to relax them, same crystals,
same 2 threads, one run:

- ``research``: the research code's way: per structure, a pymatgen ``Structure``, its neighbour list
  by ``Structure.get_neighbor_list`` (6 Å; nearest 50 per atom, then the paper's six self-image
  edges), the model on that one structure with the pure-PyTorch reference ops.
- ``e3relax``: ``relax_many`` (size-sorted batches of up to 4096 atoms, graphs in 2 worker threads,
  compiled ops), ASE Atoms in and out; once per ``--matmul-precision`` (``float32``: the same numbers
  as the research way to rounding; ``bfloat16``: channel-mixing products in bfloat16, and the largest
  change of any predicted position or cell entry against float32 is reported beside its speed).
The process keeps freed memory for reuse (``tune_cpu_allocator``, as ``e3relax predict`` does), for
both ways.

- ``chgnet`` (optional, its own Python with CHGNet installed): CHGNet 0.3.0 + FIRE +
  FrechetCellFilter to fmax 0.05 eV/Å (at most 500 steps) on the first ``--chgnet-count`` crystals;
  its structures/s is set against e3relax's on all of them.

The ``small`` preset runs the shipped weights; ``paper`` runs random weights (speed only).
``--compare A B ...`` instead times ``relax_many`` (float32) with each checkpoint on the same crystals,
in turn and then again in reverse order (the mean of the two), as ratios to the first; with
``--symprec S1 S2 ...`` each checkpoint once per symmetry tolerance (``none``: no symmetry imposed),
which is the cost of keeping the input's space group; with ``--confidence single-pass rerun`` once per
way of finding ``expected_error`` (``rerun`` runs the model twice more on its prediction).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, HERE)
from common import bench_parser, environment, write_json_lines  # noqa: E402

from e3relax_fast import E3Relax, E3RelaxConfig, E3Relaxer, tune_cpu_allocator  # noqa: E402
from e3relax_fast.relax import BatchBudget  # noqa: E402

CHGNET_RUNNER = r"""
import json, os, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(int(sys.argv[3]))
from ase.io import read
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from chgnet.model import CHGNet, CHGNetCalculator
calc = CHGNetCalculator(model=CHGNet.load(verbose=False), use_device="cpu")
frames = read(sys.argv[1], ":")
steps, converged = [], 0
start = time.perf_counter()
for atoms in frames:
    atoms.calc = calc
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    converged += bool(opt.run(fmax=0.05, steps=500))
    steps.append(opt.get_number_of_steps())
elapsed = time.perf_counter() - start
json.dump({"seconds": elapsed, "count": len(frames), "steps": steps, "converged": converged}, open(sys.argv[2], "w"))
"""


def workload(count: int, smoke: bool, seed: int = 0) -> list:
    from ase.io import read

    if smoke:
        folder = os.path.join(ROOT, "examples")
        return [read(os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if f.endswith(".cif")][:count]
    source = os.path.join(ROOT, "..", "shared", "data", "chgnet_pairs", "unrelaxed.extxyz")
    frames = read(source, ":")
    rng = np.random.default_rng(seed)
    crystals = []
    for k in range(count):
        atoms = frames[k % len(frames)]
        n = len(atoms)
        repeats = [r for r in range(1, 65) if 4 <= n * r <= 64]
        crystals.append(atoms.repeat((int(rng.choice(repeats)), 1, 1)))
    return crystals


def research_graph(structure, cutoff: float, max_neighbors: int):
    """The research code's graph of one pymatgen Structure: pymatgen's neighbour list, nearest
    ``max_neighbors`` per atom, then self images replaced by the paper's six fixed ones (equal to our
    op's edges up to ties at the cap and pairs at the cutoff)."""
    center, neighbor, images, distances = structure.get_neighbor_list(r=cutoff)
    order = np.lexsort((distances, center))
    center, neighbor, images = center[order], neighbor[order], images[order]
    rank = np.arange(len(center)) - np.searchsorted(center, center)
    keep = (rank < max_neighbors) & ~((center == neighbor) & (np.abs(images).sum(axis=1) > 0))  # cap, then drop
    center, neighbor, images = center[keep], neighbor[keep], images[keep]
    n = len(structure)
    self_shifts = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0]])
    center = np.concatenate([center, np.repeat(np.arange(n), 6)])
    neighbor = np.concatenate([neighbor, np.repeat(np.arange(n), 6)])
    images = np.concatenate([images, np.tile(self_shifts, (n, 1))])
    edge_index = torch.from_numpy(np.stack([neighbor, center]).astype(np.int64))
    return edge_index, torch.from_numpy(images.astype(np.int64))


@torch.no_grad()
def research_way(model: E3Relax, crystals: list) -> float:
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    model.choose_ops("torch")
    start = time.perf_counter()
    for atoms in crystals:
        structure = AseAtomsAdaptor.get_structure(atoms)
        edge_index, shifts = research_graph(structure, model.graph_cutoff, model.max_neighbors)
        pos = torch.tensor(structure.cart_coords, dtype=torch.float32)
        z = torch.tensor(structure.atomic_numbers, dtype=torch.long)
        cell = torch.tensor(structure.lattice.matrix, dtype=torch.float32)[None]
        pos_layers, cell_layers = model(pos, z, cell, torch.ones(1, 3, dtype=torch.bool),
                                        torch.tensor([0, len(z)]), edge_index, shifts)
        # the research code hands back pymatgen objects
        Structure(Lattice(cell_layers[-1, 0].double().numpy()), structure.species,
                  pos_layers[-1].double().numpy(), coords_are_cartesian=True)
    elapsed = time.perf_counter() - start
    model.choose_ops("auto")
    return len(crystals) / elapsed


def ours(relaxer: E3Relaxer, crystals: list) -> tuple[float, list]:
    start = time.perf_counter()
    results = list(relaxer.relax_many(crystals, budget=BatchBudget(num_workers=2)))
    elapsed = time.perf_counter() - start
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} structures failed, e.g. {failed[0]}")
    return len(crystals) / elapsed, results


def largest_change(results: list, baseline: list) -> float:
    """Largest |difference| of any predicted position or cell entry (Å) between two runs."""
    return max(max(float(np.abs(a.final_structure.positions - b.final_structure.positions).max()),
                   float(np.abs(a.final_structure.cell[:] - b.final_structure.cell[:]).max()))
               for a, b in zip(results, baseline))


def chgnet(python: str, crystals: list, threads: int) -> dict:
    from ase.io import write

    with tempfile.TemporaryDirectory() as tmp:
        inputs, output = os.path.join(tmp, "in.extxyz"), os.path.join(tmp, "out.json")
        write(inputs, crystals)
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": str(threads)}
        subprocess.run([python, "-c", CHGNET_RUNNER, inputs, output, str(threads)], check=True, env=env,
                       timeout=7200)
        with open(output) as handle:
            return json.load(handle)


def compare(paths: list[str], symprecs: list[str], confidences: list[str], crystals: list) -> list[dict]:
    """``relax_many`` structures/s of each (checkpoint, symprec, confidence), measured in order and in
    reverse, averaged."""
    setups = [(path, symprec, confidence) for path in paths for symprec in symprecs for confidence in confidences]
    rates: dict[tuple, list[float]] = {setup: [] for setup in setups}
    for order in (setups, setups[::-1]):
        for path, symprec, confidence in order:
            tolerance = None if symprec.lower() == "none" else float(symprec)
            relaxer = E3Relaxer.from_pretrained(path, device="cpu", on_unknown_element="warn", symprec=tolerance,
                                                confidence=confidence)
            rates[(path, symprec, confidence)].append(ours(relaxer, crystals)[0])
    first = float(np.mean(rates[setups[0]]))
    rows = []
    for path, symprec, confidence in setups:
        rate = float(np.mean(rates[(path, symprec, confidence)]))
        rows.append({"bench": "screening_compare", "checkpoint": path, "symprec": symprec, "confidence": confidence,
                     "e3relax_per_s": rate, "ratio_vs_first": rate / first, "crystals": len(crystals),
                     **environment()})
        print(f"{path} (symprec {symprec}, confidence {confidence}): {rate:.1f} structures/s "
              f"({rate / first:.3f} of the first)", flush=True)
    return rows


def main(argv=None) -> int:
    parser = bench_parser(__doc__, count=1000, batched=False)
    parser.add_argument("--chgnet-python", help="a Python with chgnet installed (e.g. runs/genvenv/bin/python)")
    parser.add_argument("--chgnet-count", type=int, default=30)
    parser.add_argument("--matmul-precision", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16"])
    parser.add_argument("--compare", nargs="+", metavar="CKPT", help="time these checkpoints against each other")
    parser.add_argument("--symprec", nargs="+", default=["0.01"], metavar="A|none",
                        help="with --compare: each checkpoint once per symmetry tolerance")
    parser.add_argument("--confidence", nargs="+", default=["single-pass"], choices=["single-pass", "rerun"],
                        help="with --compare: each checkpoint once per way of finding expected_error")
    args = parser.parse_args(argv)
    count = 4 if args.smoke else args.count
    tune_cpu_allocator()  # as e3relax predict does; the research way runs in this process too
    crystals = workload(count, args.smoke)
    if args.compare:
        write_json_lines(args.json, compare(args.compare, args.symprec, args.confidence, crystals))
        return 0
    atoms_total = sum(len(a) for a in crystals)
    threads = torch.get_num_threads()
    rows = []
    chgnet_result = None
    if args.chgnet_python and not args.smoke:
        chgnet_result = chgnet(args.chgnet_python, crystals[:args.chgnet_count], threads)
        chgnet_rate = chgnet_result["count"] / chgnet_result["seconds"]
        print(f"chgnet: {chgnet_rate:.3f} structures/s on {chgnet_result['count']} crystals, median "
              f"{np.median(chgnet_result['steps']):.0f} FIRE steps, {chgnet_result['converged']} converged", flush=True)
    for preset in (["small"] if args.smoke else args.preset):
        if preset == "small" and not args.smoke:
            load = lambda precision: E3Relaxer.from_pretrained(  # noqa: E731
                device="cpu", on_unknown_element="warn", matmul_precision=precision)
        else:
            torch.manual_seed(0)
            model = E3Relax(E3RelaxConfig.preset(preset))
            load = lambda precision: E3Relaxer(model, device="cpu", matmul_precision=precision)  # noqa: E731
        measured = {precision: ours(load(precision), crystals) for precision in args.matmul_precision}
        slow = research_way(load("float32").model, crystals)
        baseline = measured.get("float32", (None, None))[1]
        for precision, (fast, results) in measured.items():
            row = {"bench": "screening", "smoke": args.smoke, "preset": preset, "matmul_precision": precision,
                   "crystals": count, "atoms": atoms_total, "e3relax_per_s": fast, "research_per_s": slow,
                   "ratio_vs_research": fast / slow, **environment()}
            change = ""
            if baseline is not None and precision != "float32":
                row["max_change_vs_float32_A"] = largest_change(results, baseline)
                change = f", largest change vs float32 {row['max_change_vs_float32_A']:.1e} Å"
            if chgnet_result is not None:
                row.update(chgnet_per_s=chgnet_rate, chgnet_crystals=chgnet_result["count"],
                           chgnet_median_steps=float(np.median(chgnet_result["steps"])),
                           ratio_vs_chgnet=fast / chgnet_rate)
            rows.append(row)
            extra = f", {fast / chgnet_rate:.0f}x CHGNet+FIRE" if chgnet_result is not None else ""
            print(f"{preset} ({precision} products): {count} crystals ({atoms_total} atoms): e3relax {fast:.1f} "
                  f"structures/s, research way {slow:.2f} structures/s ({fast / slow:.1f}x){extra}{change}", flush=True)
    write_json_lines(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
