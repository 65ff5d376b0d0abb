"""Regenerate the small pair fixtures of the tests from ../shared/data (deterministic).

- pairs_unrelaxed.extxyz / pairs_relaxed.extxyz: the first 4 pairs of each of the first 4 prototypes
  (sorted by name) of the CHGNet-labelled set;
- perov5_sample.csv: the first 8 rows of the Perov-5 CSV.

    python tests/data/make_pair_fixtures.py ../shared/data
"""

import csv
import os
import sys

from ase.io import read, write

HERE = os.path.dirname(os.path.abspath(__file__))


def main(shared: str) -> None:
    unrelaxed = read(os.path.join(shared, "chgnet_pairs", "unrelaxed.extxyz"), ":")
    relaxed = read(os.path.join(shared, "chgnet_pairs", "relaxed.extxyz"), ":")
    by_prototype: dict = {}
    for u, r in zip(unrelaxed, relaxed):
        by_prototype.setdefault(u.info["prototype"], []).append((u, r))
    chosen = [pair for name in sorted(by_prototype)[:4] for pair in by_prototype[name][:4]]
    write(os.path.join(HERE, "pairs_unrelaxed.extxyz"), [u for u, _ in chosen])
    write(os.path.join(HERE, "pairs_relaxed.extxyz"), [r for _, r in chosen])
    csv.field_size_limit(1 << 24)
    with open(os.path.join(shared, "perov5", "val.csv"), newline="") as src, \
            open(os.path.join(HERE, "perov5_sample.csv"), "w", newline="") as dst:
        reader = csv.reader(src)
        writer = csv.writer(dst)
        for k, row in enumerate(reader):
            if k > 8:
                break
            writer.writerow(row)
    print(f"wrote {len(chosen)} pairs and 8 Perov-5 rows")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "data"))
