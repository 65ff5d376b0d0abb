"""Deployment artifacts: eager, scripted (fresh process), reference-only scripted, C++ and AOTInductor agree."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk

import e3relax_fast
from e3relax_fast.data import batch_from_structures
from e3relax_fast.export import (export_aoti, export_torchscript, load_aoti, load_scripted,
                                 torchscript_deprecation_silenced)
from e3relax_fast.model import E3Relax, E3RelaxConfig
from e3relax_fast.ops import library_status
from e3relax_fast.relax import BatchBudget, E3Relaxer

ROOT = os.path.join(os.path.dirname(__file__), "..")
needs_library = pytest.mark.skipif(not library_status().loaded, reason="the op library is not built")


def crystals():
    skewed = bulk("Si", "diamond", a=5.43)
    skewed.set_cell(skewed.cell.array @ np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.05], [0.0, 0.0, 1.02]]),
                    scale_atoms=True)
    skewed.rattle(0.05, seed=1)
    copper = bulk("Cu", "fcc", a=3.62) * (2, 1, 1)
    copper.rattle(0.03, seed=2)
    return [copper, bulk("NaCl", "rocksalt", a=5.64), skewed, bulk("Fe", "bcc", a=2.87) * (1, 1, 2)]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(3)
    # the shipped model's architecture: affine position updates and the strain head
    config = dataclasses.replace(E3RelaxConfig.small(), num_layers=2, hidden_channels=32, num_rbf=16,
                                 position_update="affine", strain_head=True)
    model = E3Relax(config).double().eval()
    return model


@pytest.fixture(scope="module")
def batch_tensors():
    return batch_from_structures(crystals(), dtype=torch.float64).tensors()


@pytest.fixture(scope="module")
def eager_layers(tiny_model, batch_tensors):
    with torch.no_grad():
        return tiny_model(*batch_tensors)


def run_in_fresh_process(script: str, tmp_path, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)


FRESH_RUN = """
import sys, torch
{load}
inputs = torch.load("inputs.pt", weights_only=True)
model = torch.jit.load(sys.argv[1] if len(sys.argv) > 1 else "{artifact}")
pos, cell = model(*inputs)
pos_layers, cell_layers = model.forward_layers(*inputs)
torch.save({{"pos": pos, "cell": cell, "pos_layers": pos_layers, "cell_layers": cell_layers}}, "outputs.pt")
print("e3relax_fast" in sys.modules)
"""


@needs_library
def test_scripted_artifact_equals_eager_in_a_fresh_process(tiny_model, batch_tensors, eager_layers, tmp_path):
    artifact = tmp_path / "model.ts.pt"
    metadata = export_torchscript(tiny_model, artifact, ops="compiled", dtype=torch.float64)
    torch.save(list(batch_tensors), tmp_path / "inputs.pt")
    load = f"torch.ops.load_library({library_status().path!r})"
    result = run_in_fresh_process(FRESH_RUN.format(load=load, artifact=artifact), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"  # nothing of ours imported: the op library alone sufficed
    out = torch.load(tmp_path / "outputs.pt", weights_only=True)
    torch.testing.assert_close(out["pos_layers"], eager_layers[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(out["cell_layers"], eager_layers[1], rtol=0, atol=1e-10)
    torch.testing.assert_close(out["pos"], eager_layers[0][-1], rtol=0, atol=1e-10)
    torch.testing.assert_close(out["cell"], eager_layers[1][-1], rtol=0, atol=1e-10)
    assert metadata["ops"] == "compiled" and metadata["dtype"] == "float64"


def test_reference_only_artifact_loads_with_plain_torch(tiny_model, batch_tensors, eager_layers, tmp_path):
    artifact = tmp_path / "reference.ts.pt"
    export_torchscript(tiny_model, artifact, ops="reference", dtype=torch.float64)
    torch.save(list(batch_tensors), tmp_path / "inputs.pt")
    result = run_in_fresh_process(FRESH_RUN.format(load="", artifact=artifact), tmp_path)
    assert result.returncode == 0, result.stderr
    out = torch.load(tmp_path / "outputs.pt", weights_only=True)
    torch.testing.assert_close(out["pos_layers"], eager_layers[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(out["cell_layers"], eager_layers[1], rtol=0, atol=1e-10)


@needs_library
def test_loading_without_the_op_library_says_what_to_install(tiny_model, tmp_path):
    artifact = tmp_path / "model.ts.pt"
    export_torchscript(tiny_model, artifact, ops="compiled", dtype=torch.float64)
    script = (f"from e3relax_fast.export import load_scripted\n"
              f"try:\n    load_scripted({str(artifact)!r})\nexcept RuntimeError as err:\n    print(err)\n")
    result = run_in_fresh_process(script, tmp_path, {"E3RELAX_DISABLE_EXTENSION": "1"})
    assert result.returncode == 0, result.stderr
    assert "op library is not loaded" in result.stdout
    assert "--ops reference" in result.stdout and "pip install" in result.stdout


@needs_library
def test_metadata_round_trips_and_the_relaxer_runs_the_artifact(tmp_path):
    artifact = tmp_path / "shipped.ts.pt"
    written = export_torchscript(None, artifact)
    _, metadata = load_scripted(artifact)
    assert metadata == json.loads(json.dumps(written))
    assert metadata["format_version"] == 1 and metadata["e3relax_fast_version"] == e3relax_fast.__version__
    from e3relax_fast.model.checkpoint import read_checkpoint
    from e3relax_fast.model.pretrained import resolve_model_path

    shipped_graph = read_checkpoint(resolve_model_path(None))[1]["graph"]
    assert metadata["graph"] == shipped_graph and shipped_graph["cutoff"] == 6.0  # the graph the weights read
    assert len(metadata["elements"]) >= 60 and metadata["checkpoint"]["release"]["name"] == "e3relax-small"
    deployed = E3Relaxer.from_pretrained(str(artifact))
    eager = E3Relaxer.from_pretrained()
    structures = crystals()
    for a, b in zip(deployed.relax_many(structures), eager.relax_many(structures)):
        assert a.ok and b.ok
        np.testing.assert_allclose(a.final_structure.positions, b.final_structure.positions, atol=1e-5)
        np.testing.assert_allclose(a.final_structure.cell.array, b.final_structure.cell.array, atol=1e-5)
        assert len(a.trajectory) == len(b.trajectory) == 4


def test_scripted_artifact_rejects_bad_atomic_numbers(tiny_model, batch_tensors, tmp_path):
    artifact = tmp_path / "reference.ts.pt"
    export_torchscript(tiny_model, artifact, ops="reference", dtype=torch.float64)
    model, _ = load_scripted(artifact)
    pos, z, cell, pbc, ptr = batch_tensors
    with pytest.raises(Exception, match="field 'z'"):
        model(pos, torch.zeros_like(z), cell, pbc, ptr)


def test_only_the_torchscript_deprecation_warnings_are_silenced(tiny_model, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning of export or load would fail here
        export_torchscript(tiny_model, tmp_path / "m.ts.pt", ops="reference", dtype=torch.float64)
        load_scripted(tmp_path / "m.ts.pt")
    with pytest.warns(DeprecationWarning, match="something else"), torchscript_deprecation_silenced():
        warnings.warn("something else is deprecated", DeprecationWarning)
    with pytest.warns(DeprecationWarning, match="torch.jit.script"):
        torch.jit.script(torch.nn.Identity())  # outside our context the user still sees torch's warning


@pytest.fixture(scope="module")
def aoti_package(tiny_model, tmp_path_factory):
    if not library_status().loaded:
        pytest.skip("the op library is not built")
    path = tmp_path_factory.mktemp("aoti") / "model.pt2"
    export_aoti(tiny_model, path, dtype=torch.float64)
    return path


@pytest.fixture(scope="module")
def cpp_program(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    build = tmp_path_factory.mktemp("cpp") / "build"
    configure = subprocess.run(["cmake", "-S", os.path.join(ROOT, "examples", "cpp"), "-B", str(build),
                                f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"],
                               capture_output=True, text=True, timeout=300)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    compiled = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True, text=True, timeout=900)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    return build / "relax_crystal"


CRYSTAL = os.path.join(ROOT, "examples", "cpp", "rocksalt_nacl.txt")


def crystal_tensors():
    values = [float(v) for line in open(CRYSTAL) if not line.startswith("#") for v in line.split()]
    n = int(values[0])
    atoms = torch.tensor(values[13:], dtype=torch.float64).reshape(n, 4)
    cell = torch.tensor(values[1:10], dtype=torch.float64).reshape(1, 3, 3)
    return atoms[:, 1:], atoms[:, 0].long(), cell, torch.ones(1, 3, dtype=torch.bool), torch.tensor([0, n])


def run_cpp(program, artifact, *library):
    import re

    result = subprocess.run([str(program), str(artifact), CRYSTAL, *library], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    numbers = [float(v) for v in re.findall(r"-?\d+\.\d+", result.stdout)]
    return np.array(numbers[9:]).reshape(-1, 3), np.array(numbers[:9]).reshape(3, 3)


@needs_library
@pytest.mark.slow
def test_cpp_program_prints_what_python_predicts_from_torchscript(cpp_program, tmp_path):
    artifact = tmp_path / "model.ts.pt"
    export_torchscript(None, artifact, dtype=torch.float64)
    cpp_pos, cpp_cell = run_cpp(cpp_program, artifact, library_status().path)
    model, _ = load_scripted(artifact)
    pos, cell = model(*crystal_tensors())
    np.testing.assert_allclose(cpp_cell, cell[0].numpy(), atol=2e-10)
    np.testing.assert_allclose(cpp_pos, pos.numpy(), atol=2e-10)
    missing = subprocess.run([str(cpp_program), str(artifact), CRYSTAL], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "e3relax::" in missing.stderr  # compiled ops without the library


@needs_library
@pytest.mark.slow
def test_cpp_program_prints_what_python_predicts_from_aoti(cpp_program, aoti_package, tiny_model):
    cpp_pos, cpp_cell = run_cpp(cpp_program, aoti_package, library_status().path)
    with torch.no_grad():
        pos_layers, cell_layers = tiny_model(*crystal_tensors())
    np.testing.assert_allclose(cpp_cell, cell_layers[-1, 0].numpy(), atol=2e-10)
    np.testing.assert_allclose(cpp_pos, pos_layers[-1].numpy(), atol=2e-10)


@needs_library
@pytest.mark.slow
def test_aoti_package_equals_eager_for_other_batch_sizes(tiny_model, batch_tensors, eager_layers, aoti_package):
    runner, metadata = load_aoti(aoti_package)
    assert metadata["format"] == "e3relax-deployed-aoti" and metadata["outputs"] == "all layers"
    pos_layers, cell_layers = runner(*batch_tensors)  # 4 structures: traced with 2, atoms and edges differ too
    torch.testing.assert_close(pos_layers, eager_layers[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(cell_layers, eager_layers[1], rtol=0, atol=1e-10)
    one = batch_from_structures(crystals()[2:3], dtype=torch.float64).tensors()
    with torch.no_grad():
        expected = tiny_model(*one)
    got = runner(*one)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-10)
    # e3relax predict -m model.pt2 runs through the relaxer's batching path
    deployed = E3Relaxer.from_pretrained(str(aoti_package))
    eager = E3Relaxer(tiny_model, dtype=torch.float64, device="cpu")
    for a, b in zip(deployed.relax_many(crystals(), budget=BatchBudget(max_atoms=6)), eager.relax_many(crystals())):
        assert a.ok and b.ok
        np.testing.assert_allclose(a.final_structure.positions, b.final_structure.positions, atol=1e-10)
