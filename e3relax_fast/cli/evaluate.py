"""``e3relax evaluate``: predicted vs relaxed structures, beside the Dummy baseline (input as prediction).

Two ways in:

- files: ``--pred P --ref R [--input U]`` (any readable structure files, aligned by id); the model's
  confidence is read from the predictions' ``info`` where ``e3relax predict`` wrote it;
- a model on a store split: ``-m CKPT --store S --split val`` (predictions made here, references and
  inputs from the store; rows grouped by the pair source).

Writes a CSV with one row per structure and method (every column of :mod:`e3relax_fast.metrics`),
prints per group a table of mean, median and 90th percentile of model and Dummy side by side, writes
that table as CSV next to the first (``<stem>_summary.csv``), and with ``--plot DIR`` one PNG per group
(:mod:`e3relax_fast.plots`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..symmetry import DEFAULT_SYMPREC, parse_symprec

HELP = "coordinate/cell/volume errors, match rate and symmetry of predictions vs references, with the Dummy baseline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", nargs="+", help="predicted structures (files, globs, folders)")
    parser.add_argument("--ref", nargs="+", help="relaxed reference structures, same ids as --pred")
    parser.add_argument("--input", nargs="+", help="unrelaxed inputs, same ids (adds the Dummy baseline)")
    parser.add_argument("-m", "--model", help="checkpoint or shipped model name (e3relax-small) to predict with "
                                               "(with --store)")
    parser.add_argument("--store", help="pair store made by `e3relax preprocess`")
    parser.add_argument("--split", default="val", help="split of the store to evaluate ('all': every pair)")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N pairs of the split")
    parser.add_argument("--per-source", type=int, default=0, metavar="N",
                        help="evaluate only the first N pairs of each source of the split (0: all)")
    parser.add_argument("--batch-size", type=int, default=32, help="with -m: structures per model batch")
    from ..confidence import CONFIDENCE_MODES

    parser.add_argument("--confidence", default="single-pass", choices=CONFIDENCE_MODES,
                        help="with -m: how expected_error is found (e3relax predict --confidence)")
    parser.add_argument("--no-symmetry", action="store_true", help="skip StructureMatcher and spglib (faster)")
    parser.add_argument("--symprec", type=parse_symprec, default=DEFAULT_SYMPREC, metavar="A|none",
                        help="with -m: impose each input's space group, found at this tolerance (Å), on the "
                             "model's prediction, as predict does (default %(default)g; none: the raw prediction)")
    parser.add_argument("-o", "--output", required=True, help="CSV with one row per structure and method")
    parser.add_argument("--plot", metavar="DIR", help="write one PNG of parity plots, error histograms and "
                        "error against confidence per source group into DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


#: ``info`` keys of a prediction file that hold the model's confidence (written by ``e3relax predict``).
CONFIDENCE_KEYS = ("expected_error", "last_layer_max_move", "last_layer_cell_change")


def _structures_by_id(inputs: list[str], what: str) -> dict:
    from ..io import read_structures

    records = {}
    for record in read_structures(inputs):
        if record.structure is None:
            raise ValueError(f"--{what}: {record.error}")
        if record.id in records:
            raise ValueError(f"--{what}: id {record.id!r} appears twice ({record.source}); ids must be unique")
        records[record.id] = record.structure
    return records


def _items_from_files(args: argparse.Namespace):
    preds, refs = _structures_by_id(args.pred, "pred"), _structures_by_id(args.ref, "ref")
    inputs = _structures_by_id(args.input, "input") if args.input else {}
    for structure_id, pred in preds.items():  # matched by id; an unmatched one is its own error row
        if args.input and structure_id not in inputs:
            raise ValueError(f"--input has no structure with id {structure_id!r}")
        confidence = {k: float(pred.info[k]) for k in CONFIDENCE_KEYS if k in getattr(pred, "info", {})}
        yield structure_id, "files", pred, refs.get(structure_id), inputs.get(structure_id), confidence


def _symmetric(prediction: tuple, given: tuple, symprec: float | None) -> tuple:
    """The prediction (pos, z, cell, pbc) with the space group of the input ``given`` imposed, as the
    relaxer does (e3relax_fast/symmetry.py); unchanged without symprec or symmetry."""
    import numpy as np

    from ..symmetry import find_symmetry, project

    pos, z, cell, pbc = prediction
    if symprec is None or not np.all(pbc) or not (np.isfinite(pos).all() and np.isfinite(cell).all()):
        return prediction
    symmetry = find_symmetry(given[0], given[1], given[2], symprec)
    if symmetry is None:
        return prediction
    pos, cell = project(symmetry, pos, cell)
    return pos, z, cell, pbc


def _items_from_store(args: argparse.Namespace):
    import numpy as np
    import torch
    from tqdm import tqdm

    from ..confidence import (ErrorHead, LastLayerCapture, RerunErrorModel, error_model_of, prediction_confidence,
                              rerun_features)
    from ..data.batching import pack_batches
    from ..data.store import PairStore, source_name
    from ..model.checkpoint import load_model
    from ..model.pretrained import resolve_model_path

    model, metadata = load_model(resolve_model_path(args.model))  # a checkpoint or a shipped model's name
    error_model = error_model_of(metadata, confidence=args.confidence)
    store = PairStore(args.store)
    store.graph.require_model(model.config, args.store)
    indices = store.indices(args.split)
    if args.per_source:  # the first N of each source, in store order
        taken: dict[str, int] = {}
        kept = []
        for index in indices:
            name = source_name(store.sources[index], store.kinds[index])
            if taken.get(name, 0) < args.per_source:
                taken[name] = taken.get(name, 0) + 1
                kept.append(index)
        indices = np.asarray(kept, dtype=np.int64)
    if args.limit:
        indices = indices[: args.limit]
    bar = tqdm(total=len(indices), unit="structure", disable=args.no_progress, file=sys.stderr)
    for batch_indices in pack_batches(indices, store.num_atoms, args.batch_size, 0):
        batch = store.batch(batch_indices)
        with torch.no_grad(), LastLayerCapture(model, wanted=isinstance(error_model, ErrorHead)) as last_layer:
            pos_layers, cell_layers = model(batch.pos.float(), batch.z, batch.cell.float(), batch.pbc, batch.ptr,
                                            batch.edge_index, batch.shifts)
        summaries = last_layer.summaries(batch.ptr)
        reruns = (rerun_features(model, pos_layers, cell_layers, batch.z, batch.pbc, batch.ptr, batch.pos.float(),
                                 batch.cell.float()) if isinstance(error_model, RerunErrorModel) else None)
        pos, cell = pos_layers[-1].double().numpy(), cell_layers[-1].double().numpy()
        # references and inputs come from the collated batch: the store is read once per pair
        z_all, pbc_all = batch.z.numpy(), batch.pbc.numpy()
        target_pos, target_cell = batch.target_pos.numpy(), batch.target_cell.numpy()
        input_pos, input_cell = batch.pos.numpy(), batch.cell.numpy()
        for k, index in enumerate(batch_indices):
            a0, a1 = int(batch.ptr[k]), int(batch.ptr[k + 1])
            z, pbc = z_all[a0:a1], pbc_all[k]
            given = (input_pos[a0:a1], z, input_cell[k], pbc)
            predicted = _symmetric((pos[a0:a1], z, cell[k], pbc), given, args.symprec)
            yield (store.ids[index], source_name(store.sources[index], store.kinds[index]), predicted,
                   (target_pos[a0:a1], z, target_cell[k], pbc), given,
                   prediction_confidence(pos_layers, cell_layers, batch.ptr, k, batch.pos, batch.cell, error_model,
                                         summaries, reruns and reruns[k]))
        bar.update(len(batch_indices))
    bar.close()


def _set_name(args: argparse.Namespace) -> str:
    if args.store:
        return f"{Path(args.store).name} ({args.split})"
    return Path(args.pred[0]).name + (f" +{len(args.pred) - 1}" if len(args.pred) > 1 else "")


def run(args: argparse.Namespace) -> int:
    from ..metrics import evaluate_pairs, format_summary, rows_frame, summarize

    if args.model or args.store:
        if not (args.model and args.store):
            raise ValueError("-m/--model and --store go together")
        items = _items_from_store(args)
    elif args.pred and args.ref:
        items = _items_from_files(args)
    else:
        raise ValueError("give --pred and --ref (files), or -m and --store (a model on a store split)")
    frame = rows_frame(evaluate_pairs(items, symmetry=not args.no_symmetry))
    frame.to_csv(args.output, index=False, float_format="%.6g")
    failed = int(frame["error"].notna().sum()) if "error" in frame else 0
    summary = summarize(frame.drop(columns=["error"], errors="ignore"))
    print(format_summary(summary))
    if failed:
        print(f"{failed} structures could not be scored: the 'error' column of {args.output} says why")
    summary_path = Path(args.output).with_name(Path(args.output).stem + "_summary.csv")
    summary.to_csv(summary_path, index=False, float_format="%.6g")
    print(f"per-structure rows: {args.output}; summary: {summary_path}")
    if args.plot:
        from ..plots import plot_evaluation

        paths = plot_evaluation(frame, args.plot, _set_name(args))
        print(f"figures: {', '.join(str(p) for p in paths)}")
    return 1 if failed else 0
