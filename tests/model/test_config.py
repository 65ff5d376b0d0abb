import pytest
import torch

from e3relax_fast import E3Relax, E3RelaxConfig


def test_paper_config_has_the_research_code_parameter_count():
    with torch.device("meta"):
        model = E3Relax(E3RelaxConfig.paper())
    assert model.num_parameters() == 74_636_800


def test_paper_defaults():
    c = E3RelaxConfig()
    assert (c.hidden_channels, c.num_layers, c.num_rbf, c.rbf_cutoff, c.envelope_exponent) == (512, 4, 128, 30.0, 5)
    assert (c.graph_cutoff, c.max_neighbors, c.self_images, c.num_elements) == (6.0, 50, "paper", 118)
    assert c.lattice_coupling == "invariant"
    assert E3RelaxConfig.small().hidden_channels == 128


def test_lattice_coupling_changes_no_shapes():
    with torch.device("meta"):
        a = E3Relax(E3RelaxConfig.small(lattice_coupling="paper"))
        b = E3Relax(E3RelaxConfig.small())
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]


def test_yaml_round_trip_with_overrides(tmp_path):
    path = tmp_path / "model.yaml"
    E3RelaxConfig.small().to_yaml(path)
    assert E3RelaxConfig.from_yaml(path) == E3RelaxConfig.small()
    changed = E3RelaxConfig.from_yaml(path, ["num_layers=2", "lattice_coupling=paper", "rbf_cutoff=12"])
    assert (changed.num_layers, changed.lattice_coupling, changed.rbf_cutoff) == (2, "paper", 12.0)


def test_unknown_keys_and_wrong_types_are_errors(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("hidden_channel: 64\n")
    with pytest.raises(ValueError, match="unknown config key.*hidden_channel"):
        E3RelaxConfig.from_yaml(path)
    with pytest.raises(ValueError, match="num_layers: expected an integer"):
        E3RelaxConfig.from_dict({"num_layers": "four"})
    with pytest.raises(ValueError, match="lattice_coupling must be one of"):
        E3RelaxConfig(lattice_coupling="columns")
    with pytest.raises(ValueError, match="lattice_nodes must be one of"):
        E3RelaxConfig(lattice_nodes="tied")


def test_shared_lattice_nodes_hold_a_third_of_the_lattice_weights():
    """One lattice-node block per layer and one embedding instead of three; older checkpoints (no key)
    load as "separate"."""
    with torch.device("meta"):
        separate, shared = E3Relax(E3RelaxConfig.small()), E3Relax(E3RelaxConfig.small(lattice_nodes="shared"))
    per_block = sum(p.numel() for p in separate.layers[0].lattice_nodes[0].parameters())
    saved = 2 * per_block * len(separate.layers) + 2 * separate.config.hidden_channels
    assert separate.num_parameters() - shared.num_parameters() == saved
    assert E3RelaxConfig.from_dict({}).lattice_nodes == "separate"


def test_shipped_config_files_are_the_presets():
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    for name in ("paper", "small"):
        assert E3RelaxConfig.from_yaml(os.path.join(root, f"{name}.yaml")) == E3RelaxConfig.preset(name)
