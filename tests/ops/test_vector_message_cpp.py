"""The fused C++ vector_message: equal to the reference, exact gradients, registered properly,
deterministic, and the model gives the same outputs and gradients on it as on the reference."""

import numpy as np
import pytest
import torch
from torch.library import opcheck

from e3relax_fast.ops import backend_report, message_graph, vector_message, vector_message_reference

pytestmark = pytest.mark.skipif(
    not dict((e.backend, e.available) for e in backend_report()["vector_message"])["cpp"],
    reason="op library built without the kernel (E3RELAX_BUILD=none); tests/ops/test_library.py "
           "fails unless that was asked for")


def random_inputs(num_nodes=12, num_edges=60, channels=8, seed=0, dtype=torch.float64, degree_of_node0=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_nodes, (num_edges,), generator=g)
    target = torch.cat([target, torch.zeros(degree_of_node0, dtype=torch.long)])
    target = torch.sort(target)[0]
    source = torch.randint(0, num_nodes, (target.numel(),), generator=g)
    unit = torch.randn(target.numel(), 3, generator=g, dtype=dtype)
    return (torch.randn(num_nodes, 3 * channels, generator=g, dtype=dtype),
            torch.randn(target.numel(), 3 * channels, generator=g, dtype=dtype),
            torch.randn(num_nodes, 3, channels, generator=g, dtype=dtype),
            unit / unit.norm(dim=1, keepdim=True),
            torch.stack([source, target]))


def float32_error_of_reference(inputs):
    """How far the reference itself lands from its float64 result when run in float32."""
    exact = vector_message_reference(*inputs)
    low = vector_message_reference(*[t.float() if t.is_floating_point() else t for t in inputs])
    return [float((a.double() - b).abs().max()) for a, b in zip(low, exact)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("channels", [1, 8, 33])
def test_float64_matches_the_reference(seed, channels):
    inputs = random_inputs(channels=channels, seed=seed)
    for ours, ref in zip(vector_message(*inputs, backend="cpp"), vector_message_reference(*inputs)):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-13)


def test_float32_is_within_twice_the_references_own_error():
    inputs = random_inputs(num_nodes=40, num_edges=2000, channels=64, seed=3)
    tolerance = [2 * e for e in float32_error_of_reference(inputs)]
    exact = vector_message_reference(*inputs)
    ours = vector_message(*[t.float() if t.is_floating_point() else t for t in inputs], backend="cpp")
    for o, x, tol in zip(ours, exact, tolerance):
        assert o.dtype == torch.float32
        assert float((o.double() - x).abs().max()) <= tol


def test_gradcheck_all_four_inputs():
    phi, w, vec, unit, edge_index = random_inputs(num_nodes=6, num_edges=20, channels=3)
    graph_arrays = message_graph(edge_index, 6)
    tensors = [t.requires_grad_(True) for t in (phi, w, vec, unit)]
    assert torch.autograd.gradcheck(lambda *t: torch.ops.e3relax.vector_message(*t, *graph_arrays), tensors)


def test_gradients_equal_the_references_and_one_output_may_be_unused():
    inputs = random_inputs(num_nodes=10, num_edges=80, channels=5, seed=2)
    edge_index = inputs[4]
    grads = {}
    for backend in ("torch", "cpp"):
        tensors = [t.clone().requires_grad_(True) for t in inputs[:4]]
        dh, dvec = vector_message(*tensors, edge_index, backend=backend)
        (dh.sin().sum() + (dvec ** 2).sum()).backward()
        grads[backend] = [t.grad for t in tensors]
        tensors = [t.clone().requires_grad_(True) for t in inputs[:4]]
        vector_message(*tensors, edge_index, backend=backend)[0].sum().backward()  # dvec unused
        grads[backend + "-dh-only"] = [t.grad for t in tensors]
    for a, b, t in zip(grads["cpp"] + grads["cpp-dh-only"], grads["torch"] + grads["torch-dh-only"], inputs[:4] * 2):
        # the reference leaves None where an input did not reach the loss; the fused op gives zeros
        torch.testing.assert_close(a, b if b is not None else torch.zeros_like(t), rtol=0, atol=1e-12)


def test_opcheck():
    phi, w, vec, unit, edge_index = random_inputs(num_nodes=7, num_edges=30, channels=4)
    graph_arrays = message_graph(edge_index, 7)
    args = (*[t.requires_grad_(True) for t in (phi, w, vec, unit)], *graph_arrays)
    result = opcheck(torch.ops.e3relax.vector_message.default, args)
    assert all(v == "SUCCESS" for v in result.values()), result
    plain = tuple(t.detach() for t in args)  # the device kernels themselves are not differentiable
    for op in (torch.ops.e3relax.vector_message_forward, torch.ops.e3relax.vector_message):
        result = opcheck(op.default, plain)
        assert all(v == "SUCCESS" for v in result.values()), result


def test_empty_graph_isolated_nodes_and_a_very_high_degree_node():
    phi, w, vec, unit, edge_index = random_inputs(num_edges=0)
    dh, dvec = vector_message(phi, w, vec, unit, edge_index, backend="cpp")
    assert torch.count_nonzero(dh) == 0 and torch.count_nonzero(dvec) == 0
    inputs = random_inputs(num_nodes=50, num_edges=40, channels=16, degree_of_node0=5000)
    assert int((inputs[4][1] == 0).sum()) >= 5000 and int(torch.bincount(inputs[4][1], minlength=50).eq(0).sum()) > 0
    for ours, ref in zip(vector_message(*inputs, backend="cpp"), vector_message_reference(*inputs)):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-11)


def test_bit_identical_run_to_run_and_across_thread_counts():
    inputs = random_inputs(num_nodes=300, num_edges=12000, channels=32, dtype=torch.float32)
    first = vector_message(*inputs, backend="cpp")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = vector_message(*inputs, backend="cpp")
    finally:
        torch.set_num_threads(threads)
    again = vector_message(*inputs, backend="cpp")
    for a, b, c in zip(first, single, again):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_unsorted_edges_are_refused():
    phi, w, vec, unit, edge_index = random_inputs()
    with pytest.raises(ValueError, match="sorted by target"):
        vector_message(phi, w, vec, unit, edge_index.flip(1), backend="cpp")


def test_model_outputs_and_gradients_equal_on_both_backends(make_model):
    from e3relax_fast.testing import flat_batch, random_crystal

    rng = np.random.default_rng(7)
    batch = flat_batch([random_crystal(rng, n) for n in (1, 4, 9)], dtype=torch.float64)
    model = make_model()
    results = {}
    for backend in ("torch", "cpp"):
        model.choose_ops(backend)
        model.zero_grad()
        pos = batch[0].clone().requires_grad_(True)
        pos_layers, cell_layers = model(pos, *batch[1:])
        (pos_layers[-1].pow(2).sum() + cell_layers[-1].sum()).backward()
        results[backend] = [pos_layers, cell_layers, pos.grad] + [p.grad.clone() for p in model.parameters()]
    for a, b in zip(results["cpp"], results["torch"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
