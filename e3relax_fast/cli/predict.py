"""``e3relax predict``: relax structure files in batches, never losing a structure to a bad one."""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import os
import signal
import sys
import threading
import time
from typing import Iterator

from ..confidence import CONFIDENCE_MODES
from ..relax import MAX_VOLUME_FACTOR, BatchBudget, Refinement
from ..symmetry import DEFAULT_SYMPREC, parse_symprec

HELP = "predict relaxed structures for CIF/POSCAR/extxyz files, globs or folders"

UNTRAINED_BANNER = (
    "*** UNTRAINED MODEL: randomly initialised weights from the '{preset}' config (seed {seed}). ***\n"
    "*** The output structures are NOT relaxed predictions; this run only exercises the pipeline. ***"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _io_arguments(parser.add_argument_group("inputs and outputs"))
    _model_arguments(parser.add_argument_group("model and batching"))
    _refusal_arguments(parser.add_argument_group("refusing predictions"))
    _refine_arguments(parser.add_argument_group("refinement"))


def _io_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument("-i", "--input", nargs="+", required=True, help="files, globs, folders, extxyz, ASE db")
    parser.add_argument("-o", "--output", required=True,
                        help="OUT.extxyz, OUT.db (ASE database) or a folder (one CIF, or POSCAR, per structure)")
    parser.add_argument("--recursive", action="store_true",
                        help="also read the structure files in the subfolders of input folders (links to folders "
                             "are not followed)")
    parser.add_argument("--wrap", action="store_true", help="wrap the relaxed positions into the cell")
    parser.add_argument("--folder-format", default="cif", choices=("cif", "poscar"),
                        help="file format when OUTPUT is a folder")
    parser.add_argument("--resume", action="store_true",
                        help="skip the ids already in the report of an earlier run and append to its output "
                             "(first removing what that run wrote but did not report)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output and report (without it, or --resume, they are an error)")
    parser.add_argument("--break-lock", action="store_true",
                        help="take over the output's lock even if it looks held (another host's job within its "
                             "lease): only when that job is known to be gone")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="relax only inputs I, I+N, I+2N, ... (SLURM arrays, torchrun ranks, several machines)")
    parser.add_argument("--trajectory", metavar="FILE.extxyz",
                        help="also write every layer's structure of each prediction (info: id, layer)")
    parser.add_argument("--report", help="CSV with one row per input (default: OUTPUT stem + _report.csv)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _model_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument("-m", "--model",
                        help="shipped model name, checkpoint (runs/x/best.ckpt) or exported model (.ts.pt, .pt2); "
                             "default: the shipped e3relax-small")
    parser.add_argument("--untrained", action="store_true",
                        help="use a randomly initialised model (pipeline checks only)")
    parser.add_argument("--preset", default="paper", choices=("paper", "small"),
                        help="config of the untrained model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the untrained model's weights")
    parser.add_argument("--max-atoms-per-batch", type=int, default=4096, help="atom budget of one batch")
    parser.add_argument("--max-edges-per-batch", type=int, default=0, help="edge budget of one batch (0: none)")
    parser.add_argument("--batch-size", type=int, default=256, help="structures per batch at most")
    parser.add_argument("--num-workers", type=int, default=1,
                        help="threads that validate inputs and build graphs while the model runs")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:1, ...; auto: cuda when available, else cpu")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "cpp", "cuda", "triton"),
                        help="implementation of the fast ops (e3relax info lists what runs here)")
    from ..relax import MATMUL_PRECISIONS

    parser.add_argument("--matmul-precision", default="float32", choices=MATMUL_PRECISIONS,
                        help="bfloat16: channel-mixing products in bfloat16 (float32 accumulation; geometry stays "
                             "float32): several times faster on CPUs with AMX or AVX512-BF16, predictions move "
                             "slightly (see the README)")
    parser.add_argument("--confidence", default="single-pass", choices=CONFIDENCE_MODES,
                        help="how the report's expected_error_A is found: from the predicting run (default), or "
                             "'rerun': the model run twice more on its own prediction, which ranks the error "
                             "much better at three times the cost (the model card gives both)")
    parser.add_argument("--no-tune-allocator", action="store_true",
                        help="leave glibc's allocator as it is (by default freed CPU memory is kept for reuse: "
                             "e3relax_fast.tune_cpu_allocator)")


def _refusal_arguments(parser: argparse._ArgumentGroup) -> None:
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
    parser.add_argument("--symprec", type=parse_symprec, default=DEFAULT_SYMPREC, metavar="A|none",
                        help="tolerance (Å) at which the input's space group is found and imposed on the "
                             "prediction, so it keeps the input's symmetry; the report's 'symmetry' column names "
                             "the group (default %(default)g; none: keep no symmetry)")


def _refine_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument("--refine", metavar="CALC",
                        help="then relax each prediction with an ASE calculator ('emt' or module:Class), FIRE + "
                             "FrechetCellFilter; writes the refined structures")
    parser.add_argument("--fmax", type=float, default=0.05, help="refinement force threshold, eV/A")
    parser.add_argument("--steps", type=int, default=500, help="refinement step limit")
    parser.add_argument("--refine-from-input", action="store_true",
                        help="also refine from the unrelaxed input and report its steps (the comparison)")


REPORT_COLUMNS = ["id", "input_order", "source", "formula", "atoms", "status", "error", "warning", "symmetry", "expected_error_A",
                  "last_layer_max_move_A",
                  "last_layer_cell_change_A", "shortest_distance_ratio", "max_displacement_A", "seconds", "refine_steps", "refine_converged",
                  "refine_energy_eV", "refine_energy_per_atom_eV",
                  "refine_steps_from_input"]


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return index, count


#: Exit codes of ``e3relax predict`` (docs/cli.md); argparse's usage errors exit with 2.
EXIT_OK, EXIT_SOME_FAILED, EXIT_NONE_SUCCEEDED = 0, 1, 3


def _check_arguments(args: argparse.Namespace) -> None:
    from ..io.writers import output_kind

    if args.model and args.untrained:
        raise ValueError("give -m/--model or --untrained, not both")
    if args.batch_size < 1 or args.max_atoms_per_batch < 1 or args.num_workers < 1 or args.max_edges_per_batch < 0:
        raise ValueError("--batch-size, --max-atoms-per-batch and --num-workers must be >= 1, "
                         "--max-edges-per-batch >= 0")
    if args.refine_from_input and not args.refine:
        raise ValueError("--refine-from-input needs --refine CALC")
    if args.resume and args.overwrite:
        raise ValueError("--resume continues an output, --overwrite replaces it: give one")
    if output_kind(args.output) != "folder" and os.path.isdir(args.output):
        raise ValueError(f"-o {args.output!r} is a folder; a .extxyz/.db output must be a file path")


def _write_run_record(args: argparse.Namespace, relaxer, report: str, shard: tuple[int, int], files: list[str]
                      ) -> None:
    """``<report>.run.json``: the whole input (every file, in order), the model and the settings that
    change predictions, and the shard; ``e3relax merge`` refuses to join shards whose records differ."""
    import json

    model = (f"untrained:{args.preset}:{args.seed}" if args.untrained
             else f"{args.model or 'e3relax-small'} ({relaxer.metadata.get('created', 'no creation time')})")
    record = {"inputs": [os.path.realpath(p) for p in files], "model": model,
              "settings": {"symprec": args.symprec, "matmul_precision": args.matmul_precision,
                           "max_volume_factor": args.max_volume_factor, "on_overlap": args.on_overlap,
                           "overlap_ratio": args.overlap_ratio},
              "shard": list(shard)}
    with open(report + ".run.json", "w") as handle:
        json.dump(record, handle, indent=1)


def _check_device(device: str | None) -> None:
    """``--device cuda`` where torch sees no GPU: one clear line instead of torch's assertion."""
    import torch

    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a build without CUDA")
        raise ValueError(f"--device {device}: no CUDA device is available here ({build}); use --device cpu or auto")


def _build_relaxer(args: argparse.Namespace):
    from ..model.pretrained import untrained_model
    from ..relax import E3Relaxer

    device = None if args.device == "auto" else args.device
    _check_device(device)
    options = dict(matmul_precision=args.matmul_precision, on_overlap=args.on_overlap,
                   overlap_ratio=args.overlap_ratio, max_volume_factor=args.max_volume_factor,
                   symprec=args.symprec, confidence=args.confidence)
    if args.untrained:
        print(UNTRAINED_BANNER.format(preset=args.preset, seed=args.seed), file=sys.stderr)
        return E3Relaxer(untrained_model(args.preset, args.seed).choose_ops(args.backend, device), device=device, **options)
    return E3Relaxer.from_pretrained(args.model, device=device, backend=args.backend,
                                     on_unknown_element=args.on_unknown_element, **options)


def _batch_budget(args: argparse.Namespace) -> BatchBudget:
    """The relaxer's batch budget from the command line (``--max-atoms-per-batch``, ``--batch-size``,
    ``--max-edges-per-batch``, ``--num-workers``)."""
    return BatchBudget(max_atoms=args.max_atoms_per_batch, max_structures=args.batch_size,
                       max_edges=args.max_edges_per_batch, num_workers=args.num_workers)


def _prepare_output(args: argparse.Namespace, report: str, kind: str) -> tuple[set[str], bool]:
    """Refuse to replace an earlier output unless asked; on ``--resume`` repair it (io/outputs.py).
    Returns the finished ids and whether the report already has its header."""
    from ..io.outputs import finished_ids, repair_output, repair_report, report_has_header

    exists = [p for p in ([args.output] if kind != "folder" else []) + [report] if os.path.exists(p)]
    if exists and not (args.resume or args.overwrite):
        raise ValueError(f"{exists[0]} exists from an earlier run: pass --resume to continue it or --overwrite "
                         "to replace it")
    if args.overwrite:
        for path in exists:
            os.remove(path)
        return set(), False
    if args.resume and repair_report(report):
        print(f"resuming: cut a half-written last row off {report}", file=sys.stderr)
    done = finished_ids(report) if args.resume else set()
    if args.resume:
        dropped = repair_output(args.output, kind, done)
        if dropped:
            print(f"resuming: dropped {dropped} unreported or half-written entries from {args.output}",
                  file=sys.stderr)
    return done, args.resume and report_has_header(report)


def _select_records(files: list[str], shard: tuple[int, int], done: set[str]) -> Iterator:
    """This shard's records of the input ``files`` (``expand_inputs``) not yet done, streamed (only ids
    are remembered, to find repeats: a repeated id becomes an error record). With several input files a
    shard takes files ``index, index + count, ...`` and parses only those; a single file is shared out
    by frame."""
    from ..io import read_structures

    index, count = shard
    position = {path: k for k, path in enumerate(files)}
    by_file = len(files) > 1
    if by_file:
        files = files[index::count]
    first_source, frames = {}, {}
    for k, record in enumerate(read_structures(files)):
        frame = frames[record.source] = frames.get(record.source, -1) + 1
        record.order = f"{position[record.source]}:{frame}"  # where it stands in the whole input (merge)
        if (not by_file and k % count != index) or record.id in done:
            continue
        if record.id in first_source:
            record.error = (f"structure {record.id!r} ({record.source}): duplicate id, also given by "
                            f"{first_source[record.id]}; ids must be unique (rename one)")
            record.structure = None
        else:
            first_source[record.id] = record.source
        yield record


def _result_row(result, source: str, args: argparse.Namespace) -> dict:
    import numpy as np

    atoms = result.input
    row = {"id": result.id, "source": source, "formula": atoms.get_chemical_formula(), "atoms": len(atoms),
           "status": "error" if not result.ok else ("refused" if result.refused else "ok"), "error": result.error,
           "warning": result.warning,
           "seconds": f"{result.seconds:.5f}"}
    if result.ok:
        confidence = result.confidence
        if "expected_error" in confidence:
            row["expected_error_A"] = f"{confidence['expected_error']:.4f}"
        row["last_layer_max_move_A"] = f"{confidence['last_layer_max_move']:.4f}"
        row["last_layer_cell_change_A"] = f"{confidence['last_layer_cell_change']:.4f}"
        row["shortest_distance_ratio"] = f"{confidence['shortest_distance_ratio']:.3f}"
        row["symmetry"] = result.symmetry
        moved = np.linalg.norm(result.final_structure.positions - atoms.positions, axis=1)
        row["max_displacement_A"] = f"{moved.max():.4f}" if len(atoms) else ""
        if result.refined is not None:
            refined = result.refined
            row.update(refine_steps=refined.steps, refine_converged=refined.converged,
                       refine_energy_eV=f"{refined.energy:.6f}",
                       refine_energy_per_atom_eV=f"{refined.energy / max(len(atoms), 1):.6f}")
    return row


def _refine_from_input(row: dict, result, calculator, args: argparse.Namespace) -> None:
    """The comparison run of ``--refine-from-input``; its failure is a warning on the row, the
    prediction and its own refinement stand."""
    from ..refine import refine

    try:
        row["refine_steps_from_input"] = refine(result.input, calculator, args.fmax, args.steps).steps
    except Exception as err:  # noqa: BLE001 - the calculator's error belongs to this row alone
        note = f"refinement from the input failed: {type(err).__name__}: {err}"
        row["warning"] = "; ".join(w for w in (row.get("warning"), note) if w)


def _output_structure(result, args: argparse.Namespace):
    final = (result.refined.structure if result.refined is not None else result.final_structure).copy()
    # the confidence travels with the structure: `e3relax evaluate` reads it from there
    final.info.update({k: float(v) for k, v in result.confidence.items()})
    if result.refined is not None:
        final.info.update(refine_steps=result.refined.steps, refine_converged=result.refined.converged,
                          refine_energy_eV=result.refined.energy)
    final.info.pop("spacegroup", None)  # the input's label no longer describes the moved structure
    if args.wrap:
        final.wrap()
    return final


def run(args: argparse.Namespace) -> int:
    from ..io.outputs import OutputLock, report_path
    from ..io.structures import expand_inputs
    from ..io.writers import output_kind

    _check_arguments(args)
    shard = parse_shard(args.shard)
    if not args.no_tune_allocator and args.device in ("cpu", "auto"):
        from ..allocator import tune_cpu_allocator

        tune_cpu_allocator()  # glibc only; harmless when the model then runs on a GPU
    report = args.report or report_path(args.output, *shard)
    kind = output_kind(args.output)
    files = expand_inputs(args.input, args.recursive)  # listed once: folders of millions of files
    _refuse_writing_over_inputs(args, report, kind, files)
    relaxer = _build_relaxer(args)
    # shards share a folder output, so only its report is locked; a file output is locked too
    output_lock = OutputLock(args.output, args.break_lock) if kind != "folder" else contextlib.nullcontext()
    with _StopRequests() as stop, OutputLock(report, args.break_lock) as report_lock, \
            output_lock as file_lock:
        for lock in (report_lock, file_lock):
            if getattr(lock, "replaced_stale", ""):
                print(lock.replaced_stale, file=sys.stderr)
        done, has_header = _prepare_output(args, report, kind)
        _write_run_record(args, relaxer, report, shard, files)
        records = _select_records(files, shard, done)
        if done:
            print(f"resuming: {len(done)} ids already in {report} are skipped", file=sys.stderr)
        started = time.perf_counter()
        counts = _relax_and_write(args, relaxer, records, report, kind, has_header, (stop, report_lock))
    elapsed = time.perf_counter() - started
    reported = counts["ok"] + counts["refused"] + counts["error"]
    if stop.signum:
        print(f"stopped by {signal.Signals(stop.signum).name} after {reported} structures, each written with its "
              "report row; --resume continues", file=sys.stderr)
        return 128 + stop.signum
    rate = counts["ok"] / elapsed if elapsed > 0 else float("inf")
    print(f"wrote {counts['ok']} structures to {args.output} ({rate:.1f} structures/s); "
          f"{counts['refused']} refused (the input geometry written); {counts['error']} failed; "
          f"{counts['warning']} with a warning; report: {report}")
    if args.untrained:
        print("(UNTRAINED model: displacements are random, not physical)")
    if (counts["error"] or counts["refused"]) and not counts["ok"]:
        return EXIT_NONE_SUCCEEDED  # e.g. a model that gives non-finite output for every structure
    if not reported and not done:
        print("no input structure found", file=sys.stderr)
        return EXIT_NONE_SUCCEEDED
    return EXIT_SOME_FAILED if counts["error"] else EXIT_OK  # refused rows wrote the input: not failures


def _refuse_writing_over_inputs(args: argparse.Namespace, report: str, kind: str, files: list[str]) -> None:
    """No path this run writes (output, report, trajectory, locks) may be or lie inside an input."""
    from ..io.outputs import OutputLock, refuse_outputs_touching_inputs

    outputs = {"output": args.output, "report": report, "report lock": OutputLock(report).path}
    if kind != "folder":
        outputs["output lock"] = OutputLock(args.output).path
    if args.trajectory:
        outputs["trajectory"] = args.trajectory
    refuse_outputs_touching_inputs(args.input, outputs, args.output if kind == "folder" else "", files)


class _StopRequests:
    """SIGTERM (what SLURM sends before a kill) and SIGINT during a run are remembered, not obeyed at
    once: the structure being written is finished with its report row, the locks are released, and
    the run ends with 128 + the signal's number (docs/cli.md). A second signal stops at once."""

    def __init__(self):
        self.signum = 0
        self._previous: dict = {}

    def _note(self, signum, frame) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread only
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def _relax_and_write(args: argparse.Namespace, relaxer, records: list, report: str, kind: str,
                     has_header: bool, run_state: tuple) -> dict:
    """Relax ``records`` and write each structure, then its report row (in that order: the report is
    the record of what is finished, io/outputs.py). ``run_state``: the stop requests (checked after
    each row) and the report's lock (its lease renewed as rows are written)."""
    from tqdm import tqdm

    from ..io import StructureWriter

    make_calculator = None
    if args.refine:
        from ..refine import calculator_factory

        make_calculator = calculator_factory(args.refine)
    stop, lock = run_state
    counts = {"ok": 0, "refused": 0, "error": 0, "warning": 0}
    append = args.resume and os.path.exists(report)
    with StructureWriter(args.output, args.folder_format, append=args.resume, overwrite=args.overwrite) as writer, \
            open(report, "a" if append else "w", newline="") as handle:
        table = csv.DictWriter(handle, REPORT_COLUMNS)
        if not has_header:
            table.writeheader()

        def record_row(row: dict) -> None:
            table.writerow(row)
            handle.flush()  # an interrupted run keeps every row it finished: --resume relies on it
            counts[row["status"]] += 1
            counts["warning"] += bool(row.get("warning"))
            lock.renew()

        bar = tqdm(unit="structure", disable=args.no_progress, file=sys.stderr)  # streamed: no total known
        sources: dict = {}

        def relaxable():
            """The records as the relaxer pulls them (in this thread): unreadable ones and repeated ids
            become their rows at once, the others are handed on and forgotten once reported."""
            for record in records:
                if stop.signum:
                    return
                if record.structure is None:
                    record_row({"id": record.id, "input_order": record.order, "source": record.source,
                                "status": "error", "error": record.error})
                    bar.update(1)
                    continue
                sources[record.id] = record
                yield record.id, record.structure

        results = relaxer.relax_many(relaxable(), budget=_batch_budget(args),
                                     refine=make_calculator and Refinement(make_calculator, args.fmax, args.steps))
        trajectory = open(args.trajectory, "a" if args.resume else "w") if args.trajectory else None
        input_calculator = functools.cache(make_calculator) if make_calculator else None  # one, reused
        for result in results:
            record_row(_finished_row(result, sources.pop(result.id), (writer, trajectory), input_calculator, args))
            bar.update(1)
            if stop.signum:
                break
        bar.close()
        if trajectory is not None:
            trajectory.close()
    return counts


def _finished_row(result, record, outputs: tuple, input_calculator, args: argparse.Namespace) -> dict:
    """The report row of one result, once its structure is written: ``outputs`` is the structure
    writer and the trajectory handle (or None); ``input_calculator`` gives the calculator that
    ``--refine-from-input`` reuses. A file of the user's in the output folder is kept: the row says so."""
    writer, trajectory = outputs
    row = _result_row(result, record.source, args)
    row["input_order"] = record.order
    if not result.ok:
        return row
    if trajectory is not None:
        _write_layers(trajectory, result)
    if args.refine_from_input:
        _refine_from_input(row, result, input_calculator(), args)
    try:
        writer.write(result.id, _output_structure(result, args))
    except FileExistsError as err:
        row.update(status="error", error=f"structure {result.id!r}: {err}")
    return row


def _write_layers(handle, result) -> None:
    """Every layer's structure of one prediction, as extxyz frames with ``id`` and ``layer`` (1..L)."""
    from ase.io import write

    for layer, structure in enumerate(result.trajectory, start=1):
        frame = structure.copy()
        frame.info = {"id": result.id, "layer": layer}
        write(handle, frame, format="extxyz")
    handle.flush()
