"""Fit a checkpoint's expected-error model and store it in the checkpoint (e3relax_fast/confidence.py).

    python scripts/calibrate_confidence.py CKPT --store runs/store_r3                 # hand-made model
    python scripts/calibrate_confidence.py CKPT --store runs/store_r4b_n24 --head       # learned head
    python scripts/calibrate_confidence.py CKPT --store runs/store_r4b_n24 --rerun      # rerun model

Without ``--head``: runs the model over up to --per-source pairs of each source of --split (default
train), fits log error on the log signals by least squares and stores it under metadata["confidence"].

With ``--head``: runs the model over the validation split (true inputs only, no path frames), cuts its
groups into --folds folds (default 5) by a hash of the group name, and for each fold fits the ridge head
(signals + last-layer summaries) on the other folds and predicts the fold's pairs; it prints, over every
pair, each source's Spearman and mean expected over mean actual error of these out-of-fold predictions
(no pair is judged by a head fitted on it), beside the head and the hand-made model the checkpoint
holds, then stores the head fitted on every pair under metadata["confidence_head"]. The out-of-fold
figures are the ones to quote: they judge the fitting procedure on all of the validation split, not on
half of it (the substitution sources hold 66 to 252 validation pairs; half of them leaves a Spearman
uncertain by about 0.1).

With ``--rerun``: the same folds, but the model also runs twice on its own prediction
(``confidence.rerun_features``) and the rerun model (signals + rerun signals) is fitted, reported and
stored (metadata["confidence_rerun"]) the same way. Tensors are left untouched. Never run by CI.
"""

import argparse
import collections
import hashlib
import sys

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from e3relax_fast.confidence import (ErrorHead, ErrorModel, LastLayerCapture, fit_error_head, fit_error_model,
                                     fit_rerun_model, rerun_features, structure_features)
from e3relax_fast.data.batching import pack_batches
from e3relax_fast.data.pairs import PATH_KIND
from e3relax_fast.data.store import PairStore, source_name
from e3relax_fast.model.checkpoint import load_model, read_checkpoint, save_checkpoint


def sample_indices(store: PairStore, split: str, per_source: int, seed: int) -> np.ndarray:
    """Up to ``per_source`` pairs of ``split`` from each source (0: all), path frames left out, drawn with
    ``seed``, sorted."""
    rng = np.random.default_rng(seed)
    by_source = collections.defaultdict(list)
    for index in store.indices(split):
        if store.kinds[index] != PATH_KIND:
            by_source[source_name(store.sources[index], store.kinds[index])].append(int(index))
    chosen = [rng.choice(v, size=min(per_source, len(v)), replace=False) if per_source else np.array(v)
              for v in by_source.values()]
    return np.sort(np.concatenate(chosen))


@torch.no_grad()
def features_and_errors(model, store: PairStore, indices: np.ndarray, batch_size: int = 32, reruns: bool = False):
    """Per structure: (source name, group, signal dict, last-layer summary [3F], coordinate MAE Å, rerun
    signal dict or None; the reruns only when ``reruns``)."""
    out = []
    bar = tqdm(total=len(indices), unit="structure", file=sys.stderr)
    for batch_indices in pack_batches(indices, store.num_atoms, batch_size, 0):
        b = store.batch(batch_indices)
        with LastLayerCapture(model) as last_layer:
            pos_layers, cell_layers = model(b.pos.float(), b.z, b.cell.float(), b.pbc, b.ptr, b.edge_index, b.shifts)
        summaries = last_layer.summaries(b.ptr)
        rerun_rows = (rerun_features(model, pos_layers, cell_layers, b.z, b.pbc, b.ptr, b.pos.float(), b.cell.float())
                      if reruns else [None] * len(batch_indices))
        pos_layers, cell_layers = pos_layers.double(), cell_layers.double()
        for k, index in enumerate(batch_indices):
            a0, a1 = int(b.ptr[k]), int(b.ptr[k + 1])
            error = float((pos_layers[-1, a0:a1] - b.target_pos[a0:a1]).abs().mean())
            out.append((source_name(store.sources[index], store.kinds[index]), store.groups[index],
                        structure_features(pos_layers, cell_layers, b.ptr, k, b.pos, b.cell), summaries[k], error,
                        rerun_rows[k]))
        bar.update(len(batch_indices))
    bar.close()
    return out


def group_fold(group: str, folds: int) -> int:
    """Which of ``folds`` folds of the validation split a group's pairs are in, from a hash of its name
    (with 2 folds: the halves earlier versions fitted on and judged on)."""
    return int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) % folds


def report(rows, expected: dict[str, np.ndarray]) -> None:
    """Per source: Spearman of each expected error with the actual one, and mean expected / mean actual."""
    sources = np.array([r[0] for r in rows])
    actual = np.array([r[4] for r in rows])
    for name in sorted(set(sources)):
        mine = sources == name
        cells = [f"{label} Spearman {spearmanr(values[mine], actual[mine]).statistic:.2f}, "
                 f"calibration {values[mine].mean() / actual[mine].mean():.2f}" for label, values in expected.items()]
        print(f"{name}: {mine.sum()} pairs | " + " | ".join(cells))


def fit(rows, alpha: float, fitted_on: str, rerun: bool):
    """The head (or, with ``rerun``, the rerun model) fitted on ``rows``."""
    errors = np.array([r[4] for r in rows])
    if rerun:
        return fit_rerun_model([r[5] for r in rows], errors, alpha, fitted_on)
    return fit_error_head([r[2] for r in rows], np.array([r[3] for r in rows]), errors, alpha, fitted_on)


def expected_of(model, rows, rerun: bool) -> np.ndarray:
    """``model``'s expected error (Å) of each of ``rows``."""
    if rerun:
        return model.expected_errors([r[5] for r in rows])
    return model.expected_errors([r[2] for r in rows], np.array([r[3] for r in rows]))


def out_of_fold_expected(rows, alpha: float, rerun: bool, folds: int) -> np.ndarray:
    """``[len(rows)]`` expected errors (Å), each row's from the model fitted on the rows of the other
    folds of the groups (:func:`group_fold`): no row's own error enters its expected error."""
    fold = np.array([group_fold(r[1], folds) for r in rows])
    out_of_fold = np.zeros(len(rows))
    for j in range(folds):
        outside, inside = np.flatnonzero(fold == j), np.flatnonzero(fold != j)
        if len(outside) and len(inside):
            model = fit([rows[i] for i in inside], alpha, "", rerun)
            out_of_fold[outside] = expected_of(model, [rows[i] for i in outside], rerun)
    return out_of_fold


def fit_out_of_fold(rows, metadata: dict, alpha: float, fitted_on: str, rerun: bool, folds: int):
    """The out-of-fold expected errors of every row reported beside the stored head's and hand-made
    model's; returns the model fitted on every row."""
    out_of_fold = out_of_fold_expected(rows, alpha, rerun, folds)
    expected = {"rerun" if rerun else "head": out_of_fold}
    stored_head = ErrorHead.from_metadata(metadata)
    if stored_head is not None:  # fitted elsewhere, possibly on some of these pairs
        expected["stored head"] = expected_of(stored_head, rows, rerun=False)
    hand_made = ErrorModel.from_metadata(metadata)
    if hand_made is not None:
        expected["hand-made"] = np.array([hand_made.expected_error(r[2]) for r in rows])
    print(f"every pair ({len(rows)}), out of fold ({folds} folds of the groups; the stored models as they are):")
    report(rows, expected)
    return fit(rows, alpha, f"{len(rows)} pairs of {fitted_on} (every fold)", rerun)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--store", required=True)
    parser.add_argument("--head", action="store_true", help="fit the learned head on the validation split")
    parser.add_argument("--rerun", action="store_true", help="fit the rerun model on the validation split")
    parser.add_argument("--folds", type=int, default=5, help="folds of the groups for the out-of-fold report (--head, --rerun)")
    parser.add_argument("--split", help="split to fit on (default: train; with --head or --rerun: val)")
    parser.add_argument("--per-source", type=int, help="pairs per source (default: 1000; --head, --rerun: all)")
    parser.add_argument("--alpha", type=float, help="ridge penalty per structure (--head: 0.1, --rerun: 0.01)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    on_validation = args.head or args.rerun
    if args.head and args.rerun:
        parser.error("--head and --rerun fit different models: give one")
    if args.folds < 2:
        parser.error("--folds must be at least 2: each fold is judged by a model fitted on the others")
    split = args.split or ("val" if on_validation else "train")
    per_source = args.per_source if args.per_source is not None else (0 if on_validation else 1000)
    torch.set_num_threads(1)
    model, _ = load_model(args.checkpoint)
    store = PairStore(args.store)
    rows = features_and_errors(model, store, sample_indices(store, split, per_source, args.seed), reruns=args.rerun)
    payload, metadata = read_checkpoint(args.checkpoint)
    metadata.pop("format_version", None)
    where = f"split {split!r} of {args.store}"
    if on_validation:
        alpha = args.alpha if args.alpha is not None else (0.01 if args.rerun else 0.1)
        key = "confidence_rerun" if args.rerun else "confidence_head"
        fitted = fit_out_of_fold(rows, metadata, alpha, where, args.rerun, args.folds)
    else:
        key, fitted = "confidence", fit_error_model([r[2] for r in rows], np.array([r[4] for r in rows]),
                                                    fitted_on=f"{len(rows)} pairs of {where}")
        report(rows, {"fitted": np.array([fitted.expected_error(r[2]) for r in rows])})
    save_checkpoint(args.checkpoint, payload["model"], {**metadata, key: fitted.to_dict()})
    print(f"wrote metadata[{key!r}] into {args.checkpoint} ({fitted.fitted_on})")


if __name__ == "__main__":
    main()
