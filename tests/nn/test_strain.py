"""The strain block: a symmetric, capped strain per structure that rotates as R eps R^T."""

import pytest
import torch

from e3relax_fast import E3RelaxConfig
from e3relax_fast.model.checkpoint import load_model, save_checkpoint
from e3relax_fast.nn import StrainBlock
from e3relax_fast.nn.blocks import edges_per_structure
from e3relax_fast.testing import random_rotation


def edges(rng, num_atoms=(4, 3), per_atom=5):
    torch.manual_seed(0)
    h = torch.randn(sum(num_atoms), 16, dtype=torch.float64)
    sources, targets, structure = [], [], []
    start = 0
    for b, n in enumerate(num_atoms):
        for i in range(n):
            sources += rng.integers(start, start + n, per_atom).tolist()
            targets += [start + i] * per_atom
            structure += [b] * per_atom
        start += n
    edge_index = torch.tensor([sources, targets])
    vectors = torch.from_numpy(rng.normal(size=(len(sources), 3)) * 2.0)
    return h, edge_index, torch.tensor(structure), vectors


@torch.no_grad()
def strain_of(block, h, edge_index, structure, vectors):
    distance = vectors.norm(dim=1)
    counts = edges_per_structure(structure, 2, torch.float64)
    return block(h, distance, vectors / distance.unsqueeze(1), edge_index, structure, counts)


def test_strain_is_symmetric_capped_and_rotates_with_the_bonds(rng):
    block = StrainBlock(16, 6.0, hidden=8, max_strain=0.1).double()
    with torch.no_grad():
        block.edge_weight.weight.mul_(100.0)  # drive it into the cap
    h, edge_index, structure, vectors = edges(rng)
    eps = strain_of(block, h, edge_index, structure, vectors)
    assert eps.shape == (2, 3, 3)
    torch.testing.assert_close(eps, eps.transpose(1, 2), rtol=0, atol=1e-14)
    norms = eps.square().sum(dim=(1, 2)).sqrt()
    assert bool((norms <= 0.1 + 1e-12).all()) and float(norms.min()) > 0.05
    rotation = torch.from_numpy(random_rotation(rng))
    rotated = strain_of(block, h, edge_index, structure, vectors @ rotation.T)
    torch.testing.assert_close(rotated, rotation @ eps @ rotation.T, rtol=0, atol=1e-12)


def test_edges_in_chunks_give_the_strain_of_one_pass(rng):
    block = StrainBlock(16, 6.0).double()
    h, edge_index, structure, vectors = edges(rng)
    one_pass = strain_of(block, h, edge_index, structure, vectors)
    block.edges_per_chunk = 0
    whole = strain_of(block, h, edge_index, structure, vectors)
    block.edges_per_chunk = 7  # chunks that end inside a structure's edges
    chunked = strain_of(block, h, edge_index, structure, vectors)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-15)
    torch.testing.assert_close(one_pass, whole, rtol=0, atol=1e-15)


def test_structures_without_edges_get_no_strain(rng):
    block = StrainBlock(16, 6.0).double()
    h, edge_index, structure, vectors = edges(rng)
    eps = strain_of(block, h, edge_index[:, :20], structure[:20], vectors[:20])  # structure 1 keeps none
    assert float(eps[1].abs().max()) == 0.0 and float(eps[0].abs().max()) > 0.0


def test_strain_head_needs_affine_positions():
    with pytest.raises(ValueError, match="strain_head needs position_update='affine'"):
        E3RelaxConfig(strain_head=True, position_update="cartesian")


def test_checkpoints_from_before_the_options_load_as_they_were_trained(tmp_path):
    """Checkpoints written before position_update and strain_head existed hold neither key."""
    from e3relax_fast import E3Relax

    config = E3RelaxConfig.small(hidden_channels=16, num_layers=1, num_rbf=16)
    model = E3Relax(config)
    old_keys = {k: v for k, v in config.to_dict().items() if k not in ("position_update", "strain_head")}
    save_checkpoint(tmp_path / "old.ckpt", model.state_dict(), {"model_config": old_keys})
    loaded, _ = load_model(tmp_path / "old.ckpt")
    assert loaded.config.position_update == "cartesian" and loaded.config.strain_head is False
    assert loaded.num_parameters() == model.num_parameters()


def test_bfloat16_products_leave_the_strain_head_in_full_precision():
    from torch import nn

    from e3relax_fast import E3Relax

    model = E3Relax(E3RelaxConfig.small(hidden_channels=16, num_layers=1, num_rbf=16, position_update="affine",
                                        strain_head=True)).reduce_matmul_precision()
    strain = model.layers[0].strain
    assert all(type(m) is nn.Linear for m in (strain.source, strain.target, strain.distance, strain.edge_weight))
    assert type(model.layers[0].message.edge_filter) is nn.Linear
    assert type(model.layers[0].update.vector_proj) is not nn.Linear  # the rest is reduced as before
