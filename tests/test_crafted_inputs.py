"""Inputs crafted to crash or exhaust memory get errors naming the field: checkpoints, raw tensors,
radius-graph requests."""

import json

import pytest
import torch

from e3relax_fast import E3Relaxer
from e3relax_fast.model.checkpoint import CHECKPOINT_FORMAT, load_model, save_checkpoint
from e3relax_fast.ops import radius_graph


def _payload(path, metadata_text):
    torch.save({"format": CHECKPOINT_FORMAT, "metadata": metadata_text, "model": {}}, path)


@pytest.mark.parametrize("change, field", [({"num_layers": 1e6}, "num_layers"), ({"num_layers": 10**6}, "num_layers"),
                                           ({"hidden_channels": 10**7}, "hidden_channels"),
                                           ({"graph_cutoff": float("inf")}, "graph_cutoff")])
def test_a_crafted_model_config_fails_before_allocating(tmp_path, change, field):
    path = tmp_path / "big.ckpt"
    save_checkpoint(path, {}, {"model_config": {**change}})
    with pytest.raises(ValueError, match=field):
        load_model(path)


def test_malformed_metadata_is_a_value_error_naming_the_field(tmp_path):
    _payload(tmp_path / "a.ckpt", "{not json")
    with pytest.raises(ValueError, match="'metadata'"):
        load_model(tmp_path / "a.ckpt")
    _payload(tmp_path / "b.ckpt", json.dumps({"format_version": 1}))
    with pytest.raises(ValueError, match="'model_config'"):
        load_model(tmp_path / "b.ckpt")


def test_relax_tensors_refuses_half_precision_bool_numbers_and_huge_coordinates(make_model):
    relaxer = E3Relaxer(make_model(layers=1), device="cpu", dtype=torch.float64)
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.5, 1.5, 1.5]], dtype=torch.float64)
    cell = torch.eye(3, dtype=torch.float64).unsqueeze(0) * 3.0
    pbc, ptr, z = torch.ones(1, 3, dtype=torch.bool), torch.tensor([0, 2]), torch.tensor([11, 17])
    with pytest.raises(ValueError, match="'pos' must be float32 or float64"):
        relaxer.relax_tensors(pos.half(), z, cell, pbc, ptr)
    with pytest.raises(ValueError, match="'z'"):
        relaxer.relax_tensors(pos, z.bool(), cell, pbc, ptr)
    with pytest.raises(ValueError, match="beyond"):
        relaxer.relax_tensors(pos * 1e20, z, cell, pbc, ptr)
    assert relaxer.relax_tensors(pos, z, cell, pbc, ptr)[0].shape == (1, 2, 3)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_the_radius_graph_bounds_its_pairs_before_allocating(backend):
    pos = torch.rand(100, 3, dtype=torch.float64) * 40
    cell = torch.eye(3, dtype=torch.float64).unsqueeze(0) * 40
    pbc, ptr = torch.ones(1, 3, dtype=torch.bool), torch.tensor([0, 100])
    with pytest.raises(ValueError, match="candidate pairs"):
        radius_graph(pos, cell, pbc, ptr, 1000.0, max_neighbors=50, backend=backend)
    for cutoff in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="cutoff"):
            radius_graph(pos, cell, pbc, ptr, cutoff, backend=backend)
    assert radius_graph(pos, cell, pbc, ptr, 6.0, backend=backend)[0].shape[1] > 0
