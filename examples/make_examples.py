"""Regenerate examples/*.cif and tests/data/examples_relaxed.extxyz from the shared CHGNet pairs.

Deterministic: the first pair of every 9th prototype in sorted order (20 prototypes). The unrelaxed
sides become the example CIFs that the README's main command relaxes; the relaxed sides (CHGNet 0.3.0,
FIRE + FrechetCellFilter to fmax 0.05 eV/Å) stay in the tests as known answers.

    python examples/make_examples.py ../shared/data/chgnet_pairs
"""

import os
import sys

from ase.io import read, write

HERE = os.path.dirname(os.path.abspath(__file__))


def main(source: str) -> None:
    unrelaxed = read(os.path.join(source, "unrelaxed.extxyz"), ":")
    relaxed = read(os.path.join(source, "relaxed.extxyz"), ":")
    first_of_prototype = {}
    for u, r in zip(unrelaxed, relaxed):
        assert u.info["id"] == r.info["id"]
        first_of_prototype.setdefault(u.info["prototype"], (u, r))
    chosen = [first_of_prototype[p] for p in sorted(first_of_prototype)[::9]][:20]
    for u, _ in chosen:
        write(os.path.join(HERE, f"{u.info['id']}.cif"), u)
    write(os.path.join(HERE, "..", "tests", "data", "examples_relaxed.extxyz"), [r for _, r in chosen])
    print(f"wrote {len(chosen)} examples")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "data", "chgnet_pairs"))
