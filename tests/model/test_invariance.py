"""E3Relax is a structure-to-structure map: the physics it must respect, in float64 to 1e-9."""

import numpy as np
import pytest
import torch

from e3relax_fast.ops import radius_graph
from e3relax_fast.testing import (batching_error, flat_batch, periodic_image_error, permutation_error,
                                  random_crystal, random_rotation, rotation_error, translation_error)

TOL = 1e-9


def crystals(rng, sizes=(5, 3, 8)):
    return [random_crystal(rng, n, volume_per_atom=12.0) for n in sizes]


def run(model, pos, z, cell, pbc, ptr):
    with torch.no_grad():
        return model(pos, z, cell, pbc, ptr)


def assert_close(a, b, tol=TOL):
    err = float((a - b).abs().max())
    assert err < tol, f"max error {err:.3e} > {tol:.0e}"


def test_model_moves_atoms_and_cell(make_model, rng):
    pos, z, cell, pbc, ptr = flat_batch(crystals(rng))
    model = make_model()
    pos_layers, cell_layers = run(model, pos, z, cell, pbc, ptr)
    assert pos_layers.shape == (3, len(z), 3) and cell_layers.shape == (3, 3, 3, 3)
    # Not the identity, and every layer changes the structure again (layer-wise outputs).
    assert float((pos_layers[-1] - pos).norm(dim=1).max()) > 1e-3
    assert float((cell_layers[-1] - cell).abs().max()) > 1e-3
    assert float((pos_layers[1] - pos_layers[0]).abs().max()) > 1e-4


@pytest.mark.parametrize("coupling", ["invariant", "paper"])
def test_rotating_the_input_rotates_every_layer(make_model, rng, coupling):
    assert rotation_error(make_model(coupling), flat_batch(crystals(rng)), random_rotation(rng)) < TOL


def test_translating_the_input_translates_positions_and_keeps_the_cell(make_model, rng):
    """Affine position updates: a translation t of the input is the fractional shift t L^-1, which
    every layer's output keeps (t L^-1 L_layer in Å); the cells do not change."""
    batch = flat_batch(crystals(rng))
    shift = np.array([0.7, -1.3, 2.1])
    model = make_model("invariant")
    assert translation_error(model, batch, shift, affine=True) < TOL
    assert translation_error(model, batch, shift, affine=False) > 1e-3  # the cells did change: not a plain shift


def test_cartesian_updates_translate_positions_by_the_shift(make_model, rng):
    model = make_model("invariant", position_update="cartesian")
    assert translation_error(model, flat_batch(crystals(rng)), np.array([0.7, -1.3, 2.1]), affine=False) < TOL


def test_paper_coupling_is_not_translation_invariant(make_model, rng):
    """The research code's q_ik = l_k - x_i depends on absolute positions (docs/model.md, "Our departures")."""
    pos, z, cell, pbc, ptr = flat_batch(crystals(rng))
    shift = torch.tensor([0.7, -1.3, 2.1], dtype=torch.float64)
    model = make_model("paper")
    pos_layers, _ = run(model, pos, z, cell, pbc, ptr)
    pos_moved, _ = run(model, pos + shift, z, cell, pbc, ptr)
    assert float((pos_moved - shift - pos_layers).abs().max()) > 1e-6


def test_permuting_atoms_permutes_outputs(make_model, rng):
    (crystal,) = crystals(rng, sizes=(7,))
    assert permutation_error(make_model(), crystal, rng.permutation(7)) < TOL


def test_moving_one_atom_by_a_lattice_vector_moves_it_by_the_predicted_lattice_vector(make_model, rng):
    """Affine updates: choosing another periodic image n L of one input atom changes nothing but that
    atom's image in every layer's output, n L_layer: the same crystal."""
    (crystal,) = crystals(rng, sizes=(6,))
    assert periodic_image_error(make_model("invariant"), crystal, 2, (-2, 1, 0)) < TOL


def test_cartesian_updates_keep_the_image_choice_in_the_first_layer_only(make_model, rng):
    (p, zz, c), = crystals(rng, sizes=(6,))
    moved = p.copy()
    moved[2] += c[1] - 2 * c[0]
    model = make_model("invariant", position_update="cartesian")
    pos_layers, cell_layers = run(model, *flat_batch([(p, zz, c)]))
    pos_moved, cell_moved = run(model, *flat_batch([(moved, zz, c)]))
    expected = pos_layers[0].clone()
    expected[2] += torch.from_numpy(c[1] - 2 * c[0])
    assert_close(pos_moved[0], expected)
    assert_close(cell_moved[0], cell_layers[0])
    # later layers: off by the cell change times the lattice vector (docs/model.md, the affine position update)
    assert float((pos_moved[-1, 2] - pos_layers[-1, 2] - torch.from_numpy(c[1] - 2 * c[0])).abs().max()) > 1e-6


def test_batch_gives_each_crystal_its_result_alone(make_model, rng):
    pbc_rows = [[True, True, True], [True, False, True], [True, True, True]]
    assert batching_error(make_model(), crystals(rng), pbc_rows) < 1e-10


def test_one_atom_cell_and_isolated_atoms_run(make_model):
    one_atom = (np.zeros((1, 3)), np.array([29]), np.eye(3) * 2.5)
    isolated = (np.array([[0.0, 0.0, 0.0], [10.0, 10.0, 10.0]]), np.array([8, 26]), np.eye(3) * 20.0)
    pos, z, cell, pbc, ptr = flat_batch([one_atom, isolated])
    edge_index, _, counts = radius_graph(pos, cell, pbc, ptr, 6.0, 50, "all")
    assert counts.tolist()[1] == 0  # no neighbours within the radius at all
    pos_layers, cell_layers = run(make_model(), pos, z, cell, pbc, ptr)
    assert torch.isfinite(pos_layers).all() and torch.isfinite(cell_layers).all()


def test_precomputed_graph_gives_the_same_result(make_model, rng):
    pos, z, cell, pbc, ptr = flat_batch(crystals(rng))
    model = make_model()
    edge_index, shifts, _ = radius_graph(pos, cell, pbc, ptr, model.graph_cutoff, model.max_neighbors,
                                         model.self_images)
    inside = run(model, pos, z, cell, pbc, ptr)
    with torch.no_grad():
        given = model(pos, z, cell, pbc, ptr, edge_index=edge_index, shifts=shifts)
    for a, b in zip(inside, given):
        assert torch.equal(a, b)


def test_gradients_reach_every_parameter(make_model, rng):
    pos, z, cell, pbc, ptr = flat_batch(crystals(rng))
    model = make_model()
    pos_layers, cell_layers = model(pos, z, cell, pbc, ptr)
    (pos_layers.square().sum() + cell_layers.square().sum()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("coupling, position_update", [("paper", "cartesian"), ("invariant", "affine")])
def test_scripted_model_matches_eager(make_model, rng, coupling, position_update):
    pos, z, cell, pbc, ptr = flat_batch(crystals(rng))
    model = make_model(coupling, position_update=position_update)
    scripted = torch.jit.script(model)
    for a, b in zip(run(scripted, pos, z, cell, pbc, ptr), run(model, pos, z, cell, pbc, ptr)):
        assert_close(a, b, 1e-12)


class TestBadInput:
    def test_atomic_number_outside_the_table(self, make_model, rng):
        pos, z, cell, pbc, ptr = flat_batch(crystals(rng))
        z[6] = 119
        with pytest.raises(ValueError, match=r"structure 1: field 'z' holds atomic number 119 at atom 1"):
            run(make_model(), pos, z, cell, pbc, ptr)

    def test_empty_structure(self, make_model, rng):
        pos, z, cell, pbc, ptr = flat_batch(crystals(rng))
        ptr = torch.tensor([0, 5, 5, 16])
        with pytest.raises(ValueError, match=r"structure 1: field 'pos' is empty"):
            run(make_model(), pos, z, cell, pbc, ptr)


def test_inference_kernel_equals_the_training_path(make_model, rng):
    """Without autograd on the CPU the message step runs radial_vector_message (filter never stored);
    with autograd, radial_filter + vector_message. Same model, same numbers to float64 rounding."""
    pos, z, cell, pbc, ptr = flat_batch(crystals(rng))
    model = make_model()
    inference = run(model, pos, z, cell, pbc, ptr)
    training = model(pos, z, cell, pbc, ptr)  # grad enabled: the two-op path
    for a, b in zip(inference, training):
        assert_close(a, b.detach(), 1e-12)


def test_the_equivariance_checks_catch_a_model_that_breaks_them(make_model, rng):
    """e3relax_fast.testing's checks are only worth having if they fail on a broken model."""
    model = make_model()

    def broken(pos, z, cell, pbc, ptr):  # a fixed Cartesian nudge of atom 0, after the real model
        pos_layers, cell_layers = model(pos, z, cell, pbc, ptr)
        nudge = torch.zeros_like(pos_layers)
        nudge[:, 0] = torch.tensor([0.1, 0.0, 0.0], dtype=pos.dtype)
        return pos_layers + nudge * (1 + pos[0, 0].abs()), cell_layers

    batch = flat_batch(crystals(rng))
    (crystal,) = crystals(rng, sizes=(6,))
    assert rotation_error(broken, batch, random_rotation(rng)) > 1e-3
    assert translation_error(broken, batch, np.array([0.7, -1.3, 2.1])) > 1e-3
    assert permutation_error(broken, crystal, np.roll(np.arange(6), 1)) > 1e-3
    assert batching_error(broken, crystals(rng)) > 1e-3


# --------------------------------------------------------------------------------------------------
# Shared lattice nodes (E3RelaxConfig.lattice_nodes = "shared")

@pytest.mark.parametrize("order", [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
def test_shared_lattice_nodes_do_not_depend_on_the_order_of_the_lattice_vectors(make_model, rng, order):
    """Listing the same lattice vectors in another order permutes the rows of every predicted cell and
    leaves every layer's positions as they were; with a block per node it changes the prediction."""
    pos, z, cell, pbc, ptr = flat_batch(crystals(rng))
    order = list(order)
    shared = make_model(lattice_nodes="shared")
    pos_layers, cell_layers = run(shared, pos, z, cell, pbc, ptr)
    pos_other, cell_other = run(shared, pos, z, cell[:, order], pbc, ptr)
    assert_close(pos_other, pos_layers)
    assert_close(cell_other, cell_layers[:, :, order])
    separate_pos, _ = run(make_model(), pos, z, cell, pbc, ptr)
    separate_other, _ = run(make_model(), pos, z, cell[:, order], pbc, ptr)
    assert float((separate_other - separate_pos).abs().max()) > 1e-3


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_shared_lattice_nodes_keep_the_other_symmetries_and_script(make_model, rng):
    batch = flat_batch(crystals(rng))
    model = make_model(lattice_nodes="shared")
    assert len(model.layers[0].lattice_nodes) == 1 and model.lattice_embedding.shape[0] == 1
    assert rotation_error(model, batch, random_rotation(rng)) < TOL
    assert translation_error(model, batch, np.array([0.7, -1.3, 2.1]), affine=True) < TOL
    (crystal,) = crystals(rng, sizes=(7,))
    assert permutation_error(model, crystal, rng.permutation(7)) < TOL
    assert batching_error(model, crystals(rng)) < TOL
    for a, b in zip(run(torch.jit.script(model), *batch), run(model, *batch)):
        assert_close(a, b, 1e-12)
    pos_layers, cell_layers = model(*batch)
    (pos_layers.square().sum() + cell_layers.square().sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
