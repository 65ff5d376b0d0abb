import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from e3relax_fast import E3Relax, E3RelaxConfig


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def tiny_model(coupling: str = "invariant", channels: int = 16, layers: int = 3, seed: int = 0,
               position_update: str = "affine", strain_head: bool = True, lattice_nodes: str = "separate") -> E3Relax:
    """A float64 E3Relax small enough for exact invariance tests; its weights are scaled up so that it
    moves atoms and cell by a visible amount (an untrained default model moves them by ~1e-3 Å)."""
    torch.manual_seed(seed)
    config = E3RelaxConfig(hidden_channels=channels, num_layers=layers, num_rbf=16,
                           lattice_coupling=coupling, position_update=position_update,
                           strain_head=strain_head and position_update == "affine", lattice_nodes=lattice_nodes)
    model = E3Relax(config).double().eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.position.channel_weight.weight.mul_(20.0)
            for node in layer.lattice_nodes:
                node.lattice_increment.weight.mul_(20.0)
            if layer.strain is not None:
                layer.strain.edge_weight.weight.mul_(20.0)
    return model


@pytest.fixture
def make_model():
    return tiny_model


DATA = Path(__file__).parent / "data"


def fixture_pair_records():
    """The 22 real pairs kept in tests/data: 14 CHGNet-labelled (4 prototypes) then 8 Perov-5."""
    from e3relax_fast.data.pairs import read_pairs

    return itertools.chain(read_pairs(DATA / "pairs_unrelaxed.extxyz", DATA / "pairs_relaxed.extxyz"),
                           read_pairs(DATA / "perov5_sample.csv"))


@pytest.fixture(scope="session")
def pair_store(tmp_path_factory):
    """A store of the fixture pairs (paper graph settings, 25 % of groups in 'val', seed 10: 8 pairs)."""
    from e3relax_fast.data.store import write_store

    path = tmp_path_factory.mktemp("store") / "pairs"
    write_store(fixture_pair_records(), path, split_fractions={"val": 0.25}, seed=10, progress=False,
                sources=["fixture"])
    return path


def load_script(name: str):
    """The module of ``scripts/<name>.py`` (scripts are files, not a package), for tests of their functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, DATA.parent.parent / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def shipped_pair_store(tmp_path_factory):
    """The fixture pairs as :func:`pair_store`, on the shipped model's own graph (its neighbour cap), so
    that ``evaluate -m e3relax-small`` accepts the store whatever graph the shipped release reads."""
    from e3relax_fast.data.store import GraphSettings, write_store
    from e3relax_fast.model.checkpoint import read_checkpoint
    from e3relax_fast.model.pretrained import resolve_model_path

    graph = read_checkpoint(resolve_model_path(None))[1]["graph"]
    path = tmp_path_factory.mktemp("shipped_store") / "pairs"
    write_store(fixture_pair_records(), path, GraphSettings(**graph), split_fractions={"val": 0.25}, seed=10,
                progress=False, sources=["fixture"])
    return path


@pytest.fixture
def pair_records():
    """A callable giving a fresh stream of the fixture pairs."""
    return fixture_pair_records
