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
    parser.add_argument("-m", "--model", help="checkpoint to predict with (e.g. runs/x/best.ckpt from e3relax train)")
    parser.add_argument("--untrained", action="store_true",
                        help="use a randomly initialised model (no trained model ships yet)")
    parser.add_argument("--preset", default="paper", choices=("paper", "small"),
                        help="config of the untrained model (default: paper)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the untrained model's weights")
    parser.add_argument("--batch-size", type=int, default=16, help="structures per batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "cpp", "cuda", "triton"))
    parser.add_argument("--report", help="CSV with one row per input (default: OUTPUT stem + _report.csv)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..io import read_structures, write_structures
    from ..relax import predict_structures, untrained_model

    from ..model.checkpoint import load_model

    if args.model and args.untrained:
        raise ValueError("give -m/--model or --untrained, not both")
    if not (args.model or args.untrained):
        raise ValueError("no trained model ships with this version yet; pass -m CHECKPOINT (from e3relax "
                         "train) or --untrained to run the pipeline with random weights")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.model:
        model, _ = load_model(args.model, backend=args.backend)
    else:
        print(UNTRAINED_BANNER.format(preset=args.preset, seed=args.seed), file=sys.stderr)
        model = untrained_model(args.preset, args.seed).set_backend(args.backend)

    records = list(read_structures(args.input))
    readable = [(r.id, r.structure) for r in records if r.structure is not None]
    started = time.perf_counter()
    predictions = []  # in input order, one per readable record
    bar = tqdm(total=len(readable), unit="structure", disable=args.no_progress, file=sys.stderr)
    for prediction in predict_structures(model, readable, batch_size=args.batch_size, device=args.device):
        predictions.append(prediction)
        bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - started

    written = write_structures(((p.id, p.final_structure) for p in predictions if p.ok), args.output)
    report = args.report or (args.output.rstrip("/").rsplit(".", 1)[0] + "_report.csv")
    failures = 0
    in_order = iter(predictions)
    with open(report, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "source", "formula", "atoms", "status", "max_displacement_A", "error"])
        for record in records:
            if record.structure is None:
                writer.writerow([record.id, record.source, "", "", "error", "", record.error])
                failures += 1
                continue
            prediction = next(in_order)
            status = "ok" if prediction.ok else "error"
            failures += not prediction.ok
            writer.writerow([record.id, record.source, record.structure.get_chemical_formula(), len(record.structure),
                             status, f"{prediction.max_displacement:.4f}" if prediction.ok else "", prediction.error])
    rate = written / elapsed if elapsed > 0 else float("inf")
    print(f"wrote {written} structures to {args.output} ({rate:.1f} structures/s); "
          f"{failures} failed; report: {report}")
    if args.untrained:
        print("(UNTRAINED model: displacements are random, not physical)")
    return 0
