"""The Triton vector_message, run by Triton's interpreter on the CPU (TRITON_INTERPRET=1): equal to
the reference, exact gradients, registered with torch.library, and usable by the model."""

import os

import numpy as np
import pytest
import torch
from torch.library import opcheck

# Triton reads TRITON_INTERPRET when it is imported: set it first. Nothing else in the suite imports
# Triton, and the CPU backends never look at it, so it stays set for this process.
os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton is an optional dependency (pip install -e '.[dev]' installs it)")

from e3relax_fast.ops import message_graph, vector_message, vector_message_reference  # noqa: E402


def random_inputs(num_nodes=12, num_edges=60, channels=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    target = torch.sort(torch.randint(0, num_nodes, (num_edges,), generator=g))[0]
    source = torch.randint(0, num_nodes, (num_edges,), generator=g)
    unit = torch.nn.functional.normalize(torch.randn(num_edges, 3, generator=g, dtype=dtype), dim=1)
    return (torch.randn(num_nodes, 3 * channels, generator=g, dtype=dtype),
            torch.randn(num_edges, 3 * channels, generator=g, dtype=dtype),
            torch.randn(num_nodes, 3, channels, generator=g, dtype=dtype), unit,
            torch.stack([source, target]))


@pytest.mark.parametrize("channels", [1, 5, 33])
def test_float64_matches_the_reference(channels):
    inputs = random_inputs(channels=channels, seed=channels)
    for ours, ref in zip(vector_message(*inputs, backend="triton"), vector_message_reference(*inputs)):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_float32_within_twice_the_references_own_error():
    inputs = random_inputs(num_nodes=20, num_edges=400, channels=16, seed=3)
    exact = vector_message_reference(*inputs)
    low = [t.float() if t.is_floating_point() else t for t in inputs]
    reference_error = [float((a.double() - b).abs().max()) for a, b in zip(vector_message_reference(*low), exact)]
    for ours, x, err in zip(vector_message(*low, backend="triton"), exact, reference_error):
        assert ours.dtype == torch.float32 and float((ours.double() - x).abs().max()) <= 2 * err + 1e-7


def test_gradcheck_and_gradients_equal_the_reference():
    from e3relax_fast.ops.vector_message_triton import vector_message_triton

    phi, w, vec, unit, edge_index = random_inputs(num_nodes=4, num_edges=9, channels=3)
    graph_arrays = message_graph(edge_index, 4)
    tensors = [t.clone().requires_grad_(True) for t in (phi, w, vec, unit)]
    assert torch.autograd.gradcheck(lambda *t: vector_message_triton(*t, *graph_arrays), tensors, fast_mode=True)
    grads = {}
    for backend in ("torch", "triton"):
        tensors = [t.clone().requires_grad_(True) for t in (phi, w, vec, unit)]
        dh, dvec = vector_message(*tensors, edge_index, backend=backend)
        (dh.cos().sum() + dvec.pow(2).sum()).backward()
        grads[backend] = [t.grad for t in tensors]
    for a, b in zip(grads["triton"], grads["torch"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_opcheck():
    from e3relax_fast.ops.vector_message_triton import vector_message_triton

    phi, w, vec, unit, edge_index = random_inputs(num_nodes=5, num_edges=12, channels=2)
    args = (*[t.requires_grad_(True) for t in (phi, w, vec, unit)], *message_graph(edge_index, 5))
    # test_faketensor is left out: FakeTensor tracing of a triton_op needs CUDA tensors (wrap_triton
    # traces the kernel's launch); on CPU tensors under the interpreter it cannot run.
    result = opcheck(vector_message_triton, args, test_utils=("test_schema", "test_autograd_registration"))
    assert all(v == "SUCCESS" for v in result.values()), result


def test_empty_graph_isolated_nodes_and_determinism():
    phi, w, vec, unit, edge_index = random_inputs(num_edges=0)
    dh, dvec = vector_message(phi, w, vec, unit, edge_index, backend="triton")
    assert torch.count_nonzero(dh) == 0 and torch.count_nonzero(dvec) == 0
    inputs = random_inputs(num_nodes=30, num_edges=50, channels=4, dtype=torch.float32)
    first, second = (vector_message(*inputs, backend="triton") for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_model_outputs_and_gradients_equal_the_reference(make_model):
    from e3relax_fast.testing import flat_batch, random_crystal

    batch = flat_batch([random_crystal(np.random.default_rng(3), n) for n in (2, 3)], dtype=torch.float64)
    model = make_model(channels=8, layers=2)
    results = {}
    for backend in ("torch", "triton"):
        model.choose_ops(backend)
        model.zero_grad()
        pos_layers, cell_layers = model(*batch)
        (pos_layers[-1].pow(2).sum() + cell_layers[-1].sum()).backward()
        results[backend] = [pos_layers, cell_layers] + [p.grad.clone() for p in model.parameters()]
    for a, b in zip(results["triton"], results["torch"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
