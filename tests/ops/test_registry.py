"""The one op registry: what a backend request gets, that models hold what it picks, and that the same
modules run in eager mode and under TorchScript."""

import importlib.util

import pytest
import torch

from e3relax_fast.export import torchscript_deprecation_silenced
from e3relax_fast.model import E3Relax, E3RelaxConfig
from e3relax_fast.ops import backend_report, library_status, registry
from e3relax_fast.ops.vector_message import CompiledVectorMessage, ReferenceVectorMessage, TritonVectorMessage
from e3relax_fast.ops.radial_filter import CompiledRadialFilter, ReferenceRadialFilter
from e3relax_fast.ops.radius_graph import CompiledRadiusGraph, ReferenceRadiusGraph

COMPILED = library_status().loaded
needs_library = pytest.mark.skipif(not COMPILED, reason="needs the compiled op library (pip install -e .)")


def tiny(backend="auto", device=None):
    config = E3RelaxConfig(hidden_channels=8, num_layers=2, num_rbf=8, max_neighbors=8, position_update="affine", strain_head=True)
    return E3Relax(config, backend=backend, device=device)


def test_every_op_has_a_reference_and_every_line_names_a_module():
    assert set(registry.OPS) == {"radius_graph", "vector_message", "radial_filter", "radial_vector_message"}
    for op in registry.OPS:
        assert registry.choose(op, "torch").backend == "torch"
    for entry in registry.IMPLEMENTATIONS:
        assert isinstance(entry.module, type) and issubclass(entry.module, torch.nn.Module)
        assert entry.backend in registry.BACKENDS and set(entry.devices) <= set(registry.PREFERENCE)


@needs_library
def test_auto_takes_the_compiled_kernels_on_the_cpu_and_the_model_holds_them():
    model = tiny()
    assert type(model.graph_op) is CompiledRadiusGraph
    message = model.layers[0].message
    assert type(message.filter_op) is CompiledRadialFilter and type(message.aggregation_op) is CompiledVectorMessage
    assert message.fused_op is not None and model.needs_message_graph


def test_torch_holds_the_references_and_no_fused_kernel():
    model = tiny("torch")
    assert type(model.graph_op) is ReferenceRadiusGraph
    for layer in model.layers:
        assert type(layer.message.filter_op) is ReferenceRadialFilter
        assert type(layer.message.aggregation_op) is ReferenceVectorMessage
        assert layer.message.fused_op is None
    assert not model.needs_message_graph


def test_an_unavailable_backend_raises_with_its_reason_and_a_wrong_device_is_refused():
    # here: no CUDA build; on a GPU machine: the ops were asked for on the CPU
    with pytest.raises(RuntimeError, match="backend 'cuda' for [a-z_]+ (is unavailable: .+|cannot take tensors on cpu)"):
        tiny("cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        registry.choose("vector_message", "fortran")
    with pytest.raises(ValueError, match="unknown op"):
        registry.choose("fft", "auto")
    if COMPILED:
        with pytest.raises(RuntimeError, match="cannot take tensors on cuda"):
            registry.choose("radial_filter", "cpp", "cuda")


@needs_library
def test_an_op_without_the_requested_backend_takes_auto():
    # the radial filter has no CUDA kernel: on a CUDA device a "cuda" model runs the reference filter
    assert registry.choose("radial_filter", "cuda", "cuda").backend == "torch"
    assert registry.choose("radius_graph", "triton", "cpu").backend == "cpp"


@needs_library
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_a_triton_model_never_runs_the_cpp_message_kernel(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    model = tiny("triton")
    message = model.layers[0].message
    assert type(message.aggregation_op) is TritonVectorMessage
    assert message.fused_op is None  # the fused kernel is cpp: held only beside the cpp aggregation
    assert type(model.graph_op) is CompiledRadiusGraph  # no Triton graph: the fastest other


@needs_library
def test_choose_ops_changes_no_weight_and_no_prediction_beyond_rounding():
    torch.manual_seed(0)
    model = tiny().double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pos = torch.rand(5, 3, dtype=torch.float64) * 3.0
    cell = (torch.eye(3, dtype=torch.float64) * 3.5).unsqueeze(0)
    inputs = (pos, torch.tensor([8, 8, 22, 22, 22]), cell, torch.ones(1, 3, dtype=torch.bool), torch.tensor([0, 5]))
    with torch.no_grad():
        compiled = model(*inputs)
        reference = model.choose_ops("torch")(*inputs)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    for a, b in zip(compiled, reference):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_the_scripted_model_holds_the_same_op_modules(backend):
    model = tiny(backend)
    with torchscript_deprecation_silenced():
        scripted = torch.jit.script(model)
    assert scripted.graph_op.original_name == type(model.graph_op).__name__
    for index, eager in enumerate(model.layers):
        script = getattr(scripted.layers, str(index))  # iterating a scripted ModuleList yields the eager modules
        for name in ("aggregation_op", "filter_op", "fused_op"):
            held = getattr(eager.message, name)
            if held is None:
                assert getattr(script.message, name) is None
            else:
                assert getattr(script.message, name).original_name == type(held).__name__


def test_report_reads_the_registry():
    report = backend_report()
    assert set(report) == set(registry.OPS)
    for op, entries in report.items():
        assert [e.backend for e in entries] == list(registry.BACKENDS)
        for entry in entries:
            implemented = any(i.op == op and i.backend == entry.backend for i in registry.IMPLEMENTATIONS)
            assert entry.available or entry.reason
            if not implemented:
                assert not entry.available and "kernel" in entry.reason
