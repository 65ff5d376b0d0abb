"""Turn a training run's best.ckpt into the model shipped in the package (never run by CI).

    e3relax evaluate -m runs/X/best.ckpt --store runs/STORE --split val -o runs/X/eval_val.csv
    python scripts/release_model.py runs/X/best.ckpt runs/X/eval_val_summary.json --store runs/STORE

writes e3relax_fast/pretrained/<name>.ckpt: the EMA weights stored as float16 (half the file; they are
copied into float32 parameters on load, and the validation metrics are measured on these very
weights), with the provenance, split counts per source and the validation summary in its metadata.
"""

import argparse
import collections
import csv
import json
import os
import sys

from e3relax_fast.model.checkpoint import write_release
from e3relax_fast.model.pretrained import DEFAULT_MODEL, PRETRAINED_DIR


def split_counts(store: str) -> dict:
    counts: dict = collections.defaultdict(lambda: collections.Counter())
    groups: dict = collections.defaultdict(set)
    with open(os.path.join(store, "pairs.csv")) as handle:
        for row in csv.DictReader(handle):
            counts[row["source"]][row["split"]] += 1
            groups[(row["source"], row["split"])].add(row["group"])
    return {source: {split: {"pairs": n, "groups": len(groups[(source, split)])} for split, n in c.items()}
            for source, c in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("summary", help="JSON summary written by `e3relax evaluate` on the validation split")
    parser.add_argument("--store", required=True, help="the store the run trained on")
    parser.add_argument("--name", default=DEFAULT_MODEL)
    args = parser.parse_args()
    with open(args.summary) as handle:
        summary = json.load(handle)
    release = {
        "name": args.name,
        "labels": "Perov-5: DFT (PBE) relaxations; prototype pairs: CHGNet 0.3.0 + FIRE + FrechetCellFilter "
                  "to fmax 0.05 eV/A (ML-potential labels, not DFT)",
        "splits": split_counts(args.store),
        "split_rule": "hash of (seed 0, group): prototype label for the prototype pairs, reduced formula for "
                      "Perov-5; validation fraction 0.1 of groups (e3relax_fast.data.store.assign_splits)",
        "validation": summary,
        "see": "MODEL_CARD.md beside this file",
    }
    PRETRAINED_DIR.mkdir(parents=True, exist_ok=True)
    out = PRETRAINED_DIR / f"{args.name}.ckpt"
    metadata = write_release(args.checkpoint, out, {"release": release})
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, step {metadata['step']})", file=sys.stderr)


if __name__ == "__main__":
    main()
