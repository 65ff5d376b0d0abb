"""Regenerate examples/*.cif and tests/data/examples_relaxed.extxyz from the shared CHGNet pairs.

Deterministic: the first pair of each of the first 20 prototypes (sorted) that fall in the validation
split of the shipped model's store (the split is a hash of the prototype, ``group_draw(prototype, 0) <
0.1``, see ``e3relax_fast.data.store``). So the shipped model never saw these structure types in
training, and the examples measure generalisation, not memory. The unrelaxed sides become the example
CIFs that the README's main command relaxes; the relaxed sides (CHGNet 0.3.0, FIRE + FrechetCellFilter
to fmax 0.05 eV/Å) stay in the tests as known answers.

    python examples/make_examples.py ../shared/data/chgnet_pairs
"""

import os
import sys

import numpy as np
from ase.io import read, write

from e3relax_fast.data.store import group_draw

HERE = os.path.dirname(os.path.abspath(__file__))
SPLIT_SEED, VAL_FRACTION = 0, 0.1  # the shipped store's settings (configs/train/shipped_small.yaml)


def main(source: str) -> None:
    unrelaxed = read(os.path.join(source, "unrelaxed.extxyz"), ":")
    relaxed = read(os.path.join(source, "relaxed.extxyz"), ":")
    first_of_prototype = {}
    for u, r in zip(unrelaxed, relaxed):
        assert u.info["id"] == r.info["id"]
        if group_draw(u.info["prototype"], SPLIT_SEED) < VAL_FRACTION:
            first_of_prototype.setdefault(u.info["prototype"], (u, r))
    chosen = [first_of_prototype[p] for p in sorted(first_of_prototype)][:20]
    for name in os.listdir(HERE):
        if name.endswith(".cif"):
            os.remove(os.path.join(HERE, name))
    references = []
    for u, r in chosen:
        path = os.path.join(HERE, f"{u.info['id']}.cif")
        write(path, u)
        # A CIF keeps lattice parameters, not the frame: reading it back gives the cell rotated to a
        # standard orientation. Rotate the relaxed reference the same way, so that Cartesian
        # coordinates and cells of a prediction from the CIF compare in one frame.
        rotation = np.linalg.solve(u.cell.array, read(path).cell.array)
        left, _, right = np.linalg.svd(rotation)
        rotation = left @ right  # nearest orthogonal matrix (the CIF rounds its numbers)
        r = r.copy()
        r.set_cell(r.cell.array @ rotation)
        r.positions = r.positions @ rotation
        references.append(r)
    write(os.path.join(HERE, "..", "tests", "data", "examples_relaxed.extxyz"), references)
    print(f"wrote {len(chosen)} examples from {len(first_of_prototype)} validation prototypes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "data", "chgnet_pairs"))
