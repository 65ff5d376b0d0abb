"""Fit the expected-error model of a checkpoint on its training pairs and store it in the checkpoint.

    python scripts/calibrate_confidence.py e3relax_fast/pretrained/e3relax-small.ckpt --store runs/store_r3

Runs the model over up to --per-source training pairs of each store source, computes the confidence
features and the actual coordinate MAE per structure (e3relax_fast/confidence.py), fits log error on
log features by least squares, prints the fit's Spearman per source, and rewrites the checkpoint with
the fitted model under metadata["confidence"] (tensors untouched). Training pairs only: the validation
split stays the judge (`e3relax evaluate` reports the Spearman there). Never run by CI.
"""

import argparse
import collections
import sys

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from e3relax_fast.confidence import fit_error_model, structure_features
from e3relax_fast.data.store import PairStore, source_name
from e3relax_fast.model.checkpoint import load_model, read_checkpoint, save_checkpoint
from e3relax_fast.data.batching import pack_batches


def sample_indices(store: PairStore, split: str, per_source: int, seed: int) -> np.ndarray:
    """Up to ``per_source`` pairs of ``split`` from each source, drawn with ``seed``, sorted."""
    rng = np.random.default_rng(seed)
    by_source = collections.defaultdict(list)
    for index in store.indices(split):
        by_source[source_name(store.sources[index], store.kinds[index])].append(int(index))
    chosen = [rng.choice(v, size=min(per_source, len(v)), replace=False) for v in by_source.values()]
    return np.sort(np.concatenate(chosen))


@torch.no_grad()
def features_and_errors(model, store: PairStore, indices: np.ndarray, batch_size: int = 32):
    """Per structure: (source name, feature dict, coordinate MAE Å)."""
    out = []
    bar = tqdm(total=len(indices), unit="structure", file=sys.stderr)
    for batch_indices in pack_batches(indices, store.num_atoms, batch_size, 0):
        b = store.batch(batch_indices)
        pos_layers, cell_layers = model(b.pos.float(), b.z, b.cell.float(), b.pbc, b.ptr, b.edge_index, b.shifts)
        pos_layers, cell_layers = pos_layers.double(), cell_layers.double()
        for k, index in enumerate(batch_indices):
            a0, a1 = int(b.ptr[k]), int(b.ptr[k + 1])
            error = float((pos_layers[-1, a0:a1] - b.target_pos[a0:a1]).abs().mean())
            out.append((source_name(store.sources[index], store.kinds[index]),
                        structure_features(pos_layers, cell_layers, b.ptr, k, b.pos, b.cell), error))
        bar.update(len(batch_indices))
    bar.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--store", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--per-source", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, _ = load_model(args.checkpoint)
    store = PairStore(args.store)
    rows = features_and_errors(model, store, sample_indices(store, args.split, args.per_source, args.seed))
    fitted = fit_error_model([r[1] for r in rows], np.array([r[2] for r in rows]),
                             fitted_on=f"{len(rows)} pairs of split {args.split!r} of {args.store}")
    for name in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == name]
        rho = spearmanr([fitted.expected_error(r[1]) for r in mine], [r[2] for r in mine]).statistic
        print(f"{name}: {len(mine)} pairs, Spearman on the fitting pairs {rho:.3f}")
    payload, metadata = read_checkpoint(args.checkpoint)
    metadata.pop("format_version", None)
    save_checkpoint(args.checkpoint, payload["model"], {**metadata, "confidence": fitted.to_dict()})
    print(f"wrote the error model into {args.checkpoint}: {fitted.to_dict()}")


if __name__ == "__main__":
    main()
