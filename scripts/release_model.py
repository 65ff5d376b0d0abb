"""Turn a training run's best.ckpt into the model shipped in the package (never run by CI).

    python scripts/release_model.py runs/X/best.ckpt --store runs/STORE
    python scripts/calibrate_confidence.py e3relax_fast/pretrained/e3relax-small.ckpt --store runs/STORE
    e3relax evaluate -m e3relax_fast/pretrained/e3relax-small.ckpt --store runs/STORE --split val -o runs/X/val.csv
    python scripts/release_model.py e3relax_fast/pretrained/e3relax-small.ckpt runs/X/val_summary.csv --attach

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

import pandas as pd

from e3relax_fast.model.checkpoint import write_release
from e3relax_fast.model.pretrained import DEFAULT_MODEL, PRETRAINED_DIR


#: Summary metrics kept in the release metadata (the full table is in the model card).
KEPT_METRICS = ("coord_mae", "volume_error", "rmsd", "matched")


def split_counts(store: str) -> dict:
    counts: dict = collections.defaultdict(lambda: collections.Counter())
    groups: dict = collections.defaultdict(set)
    with open(os.path.join(store, "pairs.csv")) as handle:
        for row in csv.DictReader(handle):
            counts[row["source"]][row["split"]] += 1
            groups[(row["source"], row["split"])].add(row["group"])
    return {source: {split: {"pairs": n, "groups": len(groups[(source, split)])} for split, n in c.items()}
            for source, c in counts.items()}


def _kept(path: str) -> list[dict]:
    summary = pd.read_csv(path)
    return json.loads(summary[summary["metric"].isin(KEPT_METRICS)].to_json(orient="records"))


def attach(checkpoint: str, summary: str) -> None:
    """Rewrite the metadata of a released checkpoint with the validation summary of its own weights."""
    from e3relax_fast.model.checkpoint import read_checkpoint, save_checkpoint

    payload, metadata = read_checkpoint(checkpoint)
    metadata.pop("format_version", None)
    metadata["release"]["validation"] = _kept(summary)
    save_checkpoint(checkpoint, payload["model"], metadata)
    print(f"attached {summary} to {checkpoint}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="the run's best.ckpt, or with --attach the released file")
    parser.add_argument("summary", nargs="?", help="summary CSV written by `e3relax evaluate` on the validation split")
    parser.add_argument("--store", help="the store the run trained on")
    parser.add_argument("--name", default=DEFAULT_MODEL)
    parser.add_argument("--attach", action="store_true",
                        help="only put SUMMARY into the released CHECKPOINT's metadata (after calibration and "
                             "the final evaluation of the released weights)")
    args = parser.parse_args()
    if args.attach:
        attach(args.checkpoint, args.summary)
        return
    if not args.store:
        parser.error("--store is required")
    summary = _kept(args.summary) if args.summary else []
    release = {
        "name": args.name,
        "labels": "Materials Project structures: DFT (GGA/GGA+U) minima, inputs perturbed from them; "
                  "Perov-5: DFT (GPAW, RPBE) relaxations; MP substitution pairs and AFLOW prototype pairs: CHGNet "
                  "0.3.0 + FIRE + FrechetCellFilter to fmax 0.05 eV/A (ML-potential labels, not DFT)",
        "licences": "Materials Project data CC BY 4.0 (Jain et al., APL Mater. 1, 011002 (2013)); Perov-5 "
                    "from CDVAE (MIT); see MODEL_CARD.md",
        "splits": split_counts(args.store),
        "split_rule": "hash of (seed 0, group): the parent mp_id for MP structures and MP substitution pairs, "
                      "the prototype label for the prototype pairs, the reduced formula for Perov-5; "
                      "validation fraction 0.1 of groups (e3relax_fast.data.store.assign_splits)",
        "validation": summary,
        "see": "MODEL_CARD.md beside this file",
    }
    PRETRAINED_DIR.mkdir(parents=True, exist_ok=True)
    out = PRETRAINED_DIR / f"{args.name}.ckpt"
    metadata = write_release(args.checkpoint, out, {"release": release})
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, step {metadata['step']})", file=sys.stderr)


if __name__ == "__main__":
    main()
