"""``e3relax predict``: relax structure files in batches, never losing a structure to a bad one."""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

from ..relax import MAX_VOLUME_FACTOR

HELP = "predict relaxed structures for CIF/POSCAR/extxyz files, globs or folders"

UNTRAINED_BANNER = (
    "*** UNTRAINED MODEL: randomly initialised weights from the '{preset}' config (seed {seed}). ***\n"
    "*** The output structures are NOT relaxed predictions; this run only exercises the pipeline. ***"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", nargs="+", required=True, help="files, globs, folders, extxyz, ASE db")
    parser.add_argument("-o", "--output", required=True,
                        help="OUT.extxyz, OUT.db (ASE database) or a folder (one CIF, or POSCAR, per structure)")
    parser.add_argument("-m", "--model",
                        help="shipped model name, checkpoint (runs/x/best.ckpt) or exported model (.ts.pt, .pt2); "
                             "default: the shipped e3relax-small")
    parser.add_argument("--untrained", action="store_true",
                        help="use a randomly initialised model (pipeline checks only)")
    parser.add_argument("--preset", default="paper", choices=("paper", "small"),
                        help="config of the untrained model (default: paper)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the untrained model's weights")
    parser.add_argument("--max-atoms-per-batch", type=int, default=4096, help="atom budget of one batch")
    parser.add_argument("--max-edges-per-batch", type=int, default=0, help="edge budget of one batch (0: none)")
    parser.add_argument("--batch-size", type=int, default=256, help="structures per batch at most")
    parser.add_argument("--num-workers", type=int, default=1,
                        help="threads that validate inputs and build graphs while the model runs")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="relax only inputs I, I+N, I+2N, ... (SLURM arrays, torchrun ranks, several machines)")
    parser.add_argument("--on-unknown-element", default="error", choices=("error", "warn"),
                        help="elements not seen in training (checkpoint metadata): skip with an error or warn")
    parser.add_argument("--on-overlap", default="input", choices=("input", "keep"),
                        help="when a prediction puts atoms closer than --overlap-ratio times the input's shortest "
                             "distance: write the input geometry (default) or the prediction; the report's "
                             "'warning' column says which")
    parser.add_argument("--overlap-ratio", type=float, default=0.6, help="threshold of that check")
    parser.add_argument("--max-volume-factor", type=float, default=MAX_VOLUME_FACTOR,
                        help="a prediction whose cell volume is more than this factor above or below the input's, "
                             "or that is not finite, is refused: the input geometry is written, with a warning "
                             "(default %(default)g; inf: no volume check)")
    parser.add_argument("--wrap", action="store_true", help="wrap the relaxed positions into the cell")
    parser.add_argument("--folder-format", default="cif", choices=("cif", "poscar"),
                        help="file format when OUTPUT is a folder")
    parser.add_argument("--resume", action="store_true",
                        help="skip the ids already in the report of an earlier run and append to its output")
    parser.add_argument("--refine", metavar="CALC",
                        help="then relax each prediction with an ASE calculator ('emt' or module:Class), FIRE + "
                             "FrechetCellFilter; writes the refined structures")
    parser.add_argument("--fmax", type=float, default=0.05, help="refinement force threshold, eV/A")
    parser.add_argument("--steps", type=int, default=500, help="refinement step limit")
    parser.add_argument("--refine-from-input", action="store_true",
                        help="also refine from the unrelaxed input and report its steps (the comparison)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "cpp", "cuda", "triton"))
    from ..relax import MATMUL_PRECISIONS

    parser.add_argument("--matmul-precision", default="float32", choices=MATMUL_PRECISIONS,
                        help="bfloat16: channel-mixing products in bfloat16 (float32 accumulation; geometry stays "
                             "float32): several times faster on CPUs with AMX or AVX512-BF16, predictions move "
                             "slightly (see the README)")
    parser.add_argument("--no-tune-allocator", action="store_true",
                        help="leave glibc's allocator as it is (by default freed CPU memory is kept for reuse: "
                             "e3relax_fast.tune_cpu_allocator)")
    parser.add_argument("--report", help="CSV with one row per input (default: OUTPUT stem + _report.csv)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


REPORT_COLUMNS = ["id", "source", "formula", "atoms", "status", "error", "warning", "expected_error_A",
                  "last_layer_max_move_A",
                  "last_layer_cell_change_A", "shortest_distance_ratio", "max_displacement_A", "seconds", "refine_steps", "refine_converged",
                  "refine_steps_from_input"]


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return index, count


def finished_ids(report: str) -> set[str]:
    """Ids an earlier run already reported (ok or error): ``--resume`` skips them."""
    if not os.path.exists(report):
        return set()
    with open(report, newline="") as handle:
        return {row["id"] for row in csv.DictReader(handle)}


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..io import StructureWriter, read_structures
    from ..relax import E3Relaxer, untrained_model

    if args.model and args.untrained:
        raise ValueError("give -m/--model or --untrained, not both")
    if args.batch_size < 1 or args.max_atoms_per_batch < 1 or args.num_workers < 1 or args.max_edges_per_batch < 0:
        raise ValueError("--batch-size, --max-atoms-per-batch and --num-workers must be >= 1, "
                         "--max-edges-per-batch >= 0")
    if args.refine_from_input and not args.refine:
        raise ValueError("--refine-from-input needs --refine CALC")
    shard_index, shard_count = parse_shard(args.shard)
    if not args.no_tune_allocator and args.device == "cpu":
        from ..allocator import tune_cpu_allocator

        tune_cpu_allocator()
    make_calculator = None
    if args.refine:
        from ..refine import calculator_factory, refine

        make_calculator = calculator_factory(args.refine)
    if not args.untrained:
        relaxer = E3Relaxer.from_pretrained(args.model, device=args.device, backend=args.backend,
                                            on_unknown_element=args.on_unknown_element,
                                            matmul_precision=args.matmul_precision, on_overlap=args.on_overlap,
                                            overlap_ratio=args.overlap_ratio,
                                            max_volume_factor=args.max_volume_factor)
    else:
        print(UNTRAINED_BANNER.format(preset=args.preset, seed=args.seed), file=sys.stderr)
        relaxer = E3Relaxer(untrained_model(args.preset, args.seed).set_backend(args.backend), device=args.device,
                            matmul_precision=args.matmul_precision, on_overlap=args.on_overlap,
                            overlap_ratio=args.overlap_ratio, max_volume_factor=args.max_volume_factor)

    report = args.report or (args.output.rstrip("/").rsplit(".", 1)[0] + "_report.csv")
    done = finished_ids(report) if args.resume else set()
    records = [r for k, r in enumerate(read_structures(args.input))
               if k % shard_count == shard_index and r.id not in done]
    readable = [(r.id, r.structure) for r in records if r.structure is not None]
    if done:
        print(f"resuming: {len(done)} ids already in {report} are skipped", file=sys.stderr)

    started = time.perf_counter()
    counts = {"ok": 0, "error": 0, "warning": 0}
    append = args.resume and os.path.exists(report)
    with StructureWriter(args.output, args.folder_format, append=append) as writer, \
            open(report, "a" if append else "w", newline="") as handle:
        table = csv.DictWriter(handle, REPORT_COLUMNS)
        if not append:
            table.writeheader()

        def record_row(row: dict) -> None:
            table.writerow(row)
            handle.flush()  # an interrupted run keeps every row it finished: --resume relies on it
            counts["ok" if row["status"] == "ok" else "error"] += 1
            counts["warning"] += bool(row.get("warning"))

        bar = tqdm(total=len(records), unit="structure", disable=args.no_progress, file=sys.stderr)
        for record in records:  # unreadable files first: they need no model
            if record.structure is None:
                record_row({"id": record.id, "source": record.source, "status": "error", "error": record.error})
                bar.update(1)
        sources = {r.id: r.source for r in records}
        results = relaxer.relax_many(readable, max_atoms_per_batch=args.max_atoms_per_batch,
                                     max_structures_per_batch=args.batch_size,
                                     max_edges_per_batch=args.max_edges_per_batch, num_workers=args.num_workers,
                                     refine=make_calculator, fmax=args.fmax, refine_steps=args.steps)
        for result in results:
            atoms = result.input
            row = {"id": result.id, "source": sources[result.id], "formula": atoms.get_chemical_formula(),
                   "atoms": len(atoms), "status": "ok" if result.ok else "error", "error": result.error,
                   "warning": result.warning,
                   "seconds": f"{result.seconds:.5f}"}
            if result.ok:
                final = result.final_structure
                if "expected_error" in result.confidence:
                    row["expected_error_A"] = f"{result.confidence['expected_error']:.4f}"
                row["last_layer_max_move_A"] = f"{result.confidence['last_layer_max_move']:.4f}"
                row["last_layer_cell_change_A"] = f"{result.confidence['last_layer_cell_change']:.4f}"
                row["shortest_distance_ratio"] = f"{result.confidence['shortest_distance_ratio']:.3f}"
                row["max_displacement_A"] = (f"{np.linalg.norm(final.positions - atoms.positions, axis=1).max():.4f}"
                                             if len(atoms) else "")
                if result.refined is not None:
                    final = result.refined.structure
                    row.update(refine_steps=result.refined.steps, refine_converged=result.refined.converged)
                    if args.refine_from_input:
                        row["refine_steps_from_input"] = refine(atoms, make_calculator(), args.fmax, args.steps).steps
                final = final.copy()
                # the confidence travels with the structure: `e3relax evaluate` reads it from there
                final.info.update({k: float(v) for k, v in result.confidence.items()})
                if args.wrap:
                    final.wrap()
                writer.write(result.id, final)
            record_row(row)
            bar.update(1)
        bar.close()
    elapsed = time.perf_counter() - started
    rate = counts["ok"] / elapsed if elapsed > 0 else float("inf")
    print(f"wrote {counts['ok']} structures to {args.output} ({rate:.1f} structures/s); "
          f"{counts['error']} failed; {counts['warning']} with a warning; report: {report}")
    if args.untrained:
        print("(UNTRAINED model: displacements are random, not physical)")
    return 0
