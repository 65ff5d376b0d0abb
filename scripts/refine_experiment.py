"""Predict, then refine, measured: CHGNet + FIRE + FrechetCellFilter to fmax 0.05 eV/Å on validation
pairs, started from our prediction and from the unrelaxed input. Never run by CI.

    python scripts/refine_experiment.py predict  [--count 100] [--model e3relax-small] [--source mp]  # our venv
    runs/genvenv/bin/python scripts/refine_experiment.py relax [--start input|prediction] # CHGNet's venv
    python scripts/refine_experiment.py summary

``--out DIR`` (default runs/refine_experiment) keeps experiments apart; ``relax --start`` runs one of
the two starts only, so two processes (one per start) use two cores.

Pairs (``--source``): ``prototypes``, the first ``count`` pairs (by id) of ``../shared/data/chgnet_pairs``
whose prototype is in the validation split (structure types the shipped model never saw); ``mp``, the
first ``count`` Materials Project structures (by id) of at most 40 atoms whose mp_id is in the
validation split, each with the perturbed input `e3relax preprocess --structures` stores for it. The CHGNet phase appends one JSON line
per (pair, start) to runs/refine_experiment/relax.jsonl and resumes from it; one thread per process,
``OPENBLAS_NUM_THREADS=1``. CHGNet stands in for DFT, as the labels were made with it (0.3.0 weights).
"""

import argparse
import json
import os
import sys
import time

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "runs", "refine_experiment")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "chgnet_pairs")


MP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "mp", "structures.extxyz")


def prototype_inputs(count: int) -> list:
    from ase.io import read

    from e3relax_fast.data.store import group_draw

    unrelaxed = read(os.path.join(DATA, "unrelaxed.extxyz"), ":")
    chosen = sorted((a for a in unrelaxed if group_draw(a.info["prototype"], 0) < 0.1), key=lambda a: a.info["id"])
    return chosen[:count]


def mp_inputs(count: int, out: str) -> list:
    """Perturbed inputs of validation MP structures, as the store holds them (seeded by id)."""
    from ase import Atoms
    from ase.io import iread, write

    from e3relax_fast.data.perturb import structure_pairs
    from e3relax_fast.data.store import group_draw

    chosen = sorted((a for a in iread(MP, index=":") if len(a) <= 40 and group_draw(a.info["mp_id"], 0) < 0.1),
                    key=lambda a: a.info["mp_id"])[:count]
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "reference.extxyz"), chosen)
    inputs = []
    for record in structure_pairs(os.path.join(out, "reference.extxyz")):
        pos, z, cell, pbc = record.unrelaxed
        inputs.append(Atoms(numbers=z, positions=pos, cell=cell, pbc=pbc,
                            info={"id": record.id, "prototype": record.group}))
    return inputs


def predict(count: int, model: str, out: str, on_overlap: str, source: str) -> None:
    from ase.io import write

    from e3relax_fast import E3Relaxer

    chosen = prototype_inputs(count) if source == "prototypes" else mp_inputs(count, out)
    relaxer = E3Relaxer.from_pretrained(model, on_overlap=on_overlap)
    results = list(relaxer.relax_many([(a.info["id"], a) for a in chosen]))
    predicted = []
    for atoms, result in zip(chosen, results):
        if not result.ok:
            raise RuntimeError(result.error)
        p = result.final_structure.copy()
        # refused: the relaxer returned the input geometry (atoms pushed together, see E3Relaxer)
        p.info = {"id": atoms.info["id"], "prototype": atoms.info["prototype"],
                  "refused": bool(result.warning) and on_overlap == "input"}
        predicted.append(p)
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "input.extxyz"), chosen)
    write(os.path.join(out, "predicted.extxyz"), predicted)
    refused = sum(p.info["refused"] for p in predicted)
    print(f"{len(chosen)} pairs predicted -> {out}; {refused} refused (input geometry kept)")


def relax(out: str, only: str) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    from ase.filters import FrechetCellFilter
    from ase.io import read
    from ase.optimize import FIRE
    from chgnet.model import CHGNet, CHGNetCalculator

    calc = CHGNetCalculator(model=CHGNet.load(verbose=False), use_device="cpu")
    log = os.path.join(out, f"relax_{only}.jsonl" if only else "relax.jsonl")
    done = set()
    if os.path.exists(log):
        done = {(r["id"], r["start"]) for r in map(json.loads, open(log))}
    inputs = read(os.path.join(out, "input.extxyz"), ":")
    predicted = read(os.path.join(out, "predicted.extxyz"), ":")
    with open(log, "a") as handle:
        for u, p in zip(inputs, predicted):
            for start, atoms in (("input", u), ("prediction", p)):
                if (u.info["id"], start) in done or (only and start != only):
                    continue
                atoms = atoms.copy()
                atoms.calc = calc
                opt = FIRE(FrechetCellFilter(atoms), logfile=None)
                began = time.process_time()
                converged = bool(opt.run(fmax=0.05, steps=1000))
                row = {"id": u.info["id"], "start": start, "steps": opt.get_number_of_steps(),
                       "converged": converged, "cpu_s": time.process_time() - began,
                       "energy_per_atom": float(atoms.get_potential_energy()) / len(atoms)}
                handle.write(json.dumps(row) + "\n")
                handle.flush()


def summary(out: str) -> None:
    import glob

    import numpy as np

    rows = [json.loads(line) for path in sorted(glob.glob(os.path.join(out, "relax*.jsonl"))) for line in open(path)]
    by_id = {}
    for r in rows:
        by_id.setdefault(r["id"], {})[r["start"]] = r
    pairs = [v for v in by_id.values() if len(v) == 2]
    from ase.io import read

    refused = sum(bool(a.info.get("refused")) for a in read(os.path.join(out, "predicted.extxyz"), ":"))
    result = {"pairs": len(pairs), "predictions_refused_input_kept": refused}
    for start in ("input", "prediction"):
        steps = np.array([p[start]["steps"] for p in pairs])
        cpu = np.array([p[start]["cpu_s"] for p in pairs])
        result[start] = {"median_steps": float(np.median(steps)), "mean_steps": float(steps.mean()),
                         "total_cpu_s": float(cpu.sum()), "converged": int(sum(p[start]["converged"] for p in pairs))}
    result["steps_saved_median"] = 1 - result["prediction"]["median_steps"] / result["input"]["median_steps"]
    result["steps_saved_mean"] = 1 - result["prediction"]["mean_steps"] / result["input"]["mean_steps"]
    result["cpu_saved"] = 1 - result["prediction"]["total_cpu_s"] / result["input"]["total_cpu_s"]
    energy_gap = [p["prediction"]["energy_per_atom"] - p["input"]["energy_per_atom"] for p in pairs]
    result["final_energy_prediction_minus_input_eV_per_atom_median"] = float(np.median(energy_gap))
    print(json.dumps(result, indent=1))
    with open(os.path.join(out, "summary.json"), "w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("predict", "relax", "summary"))
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--source", choices=("prototypes", "mp"), default="prototypes", help="predict: which pairs")
    parser.add_argument("--model", default="e3relax-small")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--start", choices=("input", "prediction"), default=None, help="relax: one start only")
    parser.add_argument("--on-overlap", choices=("input", "keep"), default="input",
                        help="predict: what the relaxer returns for predictions that push atoms together")
    args = parser.parse_args()
    {"predict": lambda: predict(args.count, args.model, args.out, args.on_overlap, args.source), "relax": lambda: relax(args.out, args.start),
     "summary": lambda: summary(args.out)}[args.phase]()
    sys.exit(0)
