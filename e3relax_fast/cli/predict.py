"""``e3relax predict``: relax structure files in batches, never losing a structure to a bad one."""

from __future__ import annotations

import argparse
import csv
import sys
import time

HELP = "predict relaxed structures for CIF/POSCAR/extxyz files, globs or folders"

UNTRAINED_BANNER = (
    "*** UNTRAINED MODEL: randomly initialised weights from the '{preset}' config (seed {seed}). ***\n"
    "*** The output structures are NOT relaxed predictions; this run only exercises the pipeline. ***"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", nargs="+", required=True, help="files, globs or folders")
    parser.add_argument("-o", "--output", required=True, help=".extxyz file, or a folder for CIFs")
    parser.add_argument("-m", "--model",
                        help="shipped model name or checkpoint (e.g. runs/x/best.ckpt); default: the shipped "
                             "e3relax-small")
    parser.add_argument("--untrained", action="store_true",
                        help="use a randomly initialised model (pipeline checks only)")
    parser.add_argument("--preset", default="paper", choices=("paper", "small"),
                        help="config of the untrained model (default: paper)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the untrained model's weights")
    parser.add_argument("--max-atoms-per-batch", type=int, default=4096, help="atom budget of one batch")
    parser.add_argument("--batch-size", type=int, default=256, help="structures per batch at most")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="relax only inputs I, I+N, I+2N, ... (SLURM arrays, several machines)")
    parser.add_argument("--on-unknown-element", default="error", choices=("error", "warn"),
                        help="elements not seen in training (checkpoint metadata): skip with an error or warn")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "cpp", "cuda", "triton"))
    parser.add_argument("--report", help="CSV with one row per input (default: OUTPUT stem + _report.csv)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return index, count


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..io import read_structures, write_structures
    from ..relax import E3Relaxer, untrained_model

    if args.model and args.untrained:
        raise ValueError("give -m/--model or --untrained, not both")
    if args.batch_size < 1 or args.max_atoms_per_batch < 1:
        raise ValueError("--batch-size and --max-atoms-per-batch must be >= 1")
    shard_index, shard_count = parse_shard(args.shard)
    if not args.untrained:
        relaxer = E3Relaxer.from_pretrained(args.model, device=args.device, backend=args.backend,
                                            on_unknown_element=args.on_unknown_element)
    else:
        print(UNTRAINED_BANNER.format(preset=args.preset, seed=args.seed), file=sys.stderr)
        relaxer = E3Relaxer(untrained_model(args.preset, args.seed).set_backend(args.backend), device=args.device)

    records = [r for k, r in enumerate(read_structures(args.input)) if k % shard_count == shard_index]
    readable = [(r.id, r.structure) for r in records if r.structure is not None]
    started = time.perf_counter()
    ordered = []  # relax_many yields in input order: one result per readable record
    bar = tqdm(total=len(readable), unit="structure", disable=args.no_progress, file=sys.stderr)
    for result in relaxer.relax_many(readable, max_atoms_per_batch=args.max_atoms_per_batch,
                                     max_structures_per_batch=args.batch_size):
        ordered.append(result)
        bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - started

    written = write_structures(((r.id, r.final_structure) for r in ordered if r.ok), args.output)
    in_order = iter(ordered)
    report = args.report or (args.output.rstrip("/").rsplit(".", 1)[0] + "_report.csv")
    failures = 0
    with open(report, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "source", "formula", "atoms", "status", "max_displacement_A",
                         "last_layer_max_move_A", "error"])
        for record in records:
            if record.structure is None:
                writer.writerow([record.id, record.source, "", "", "error", "", "", record.error])
                failures += 1
                continue
            result = next(in_order)
            failures += not result.ok
            moved = (f"{np.linalg.norm(result.final_structure.positions - record.structure.positions, axis=1).max():.4f}"
                     if result.ok and len(record.structure) else "")
            confidence = f"{result.confidence['last_layer_max_move']:.4f}" if result.ok else ""
            writer.writerow([record.id, record.source, record.structure.get_chemical_formula(), len(record.structure),
                             "ok" if result.ok else "error", moved, confidence, result.error])
    rate = written / elapsed if elapsed > 0 else float("inf")
    print(f"wrote {written} structures to {args.output} ({rate:.1f} structures/s); "
          f"{failures} failed; report: {report}")
    if args.untrained:
        print("(UNTRAINED model: displacements are random, not physical)")
    return 0
