"""The CUDA vector_message kernels against the reference (run where a GPU and a CUDA build exist)."""

import pytest
import torch

from e3relax_fast.ops import backend_report, vector_message, vector_message_reference

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    not dict((e.backend, e.available) for e in backend_report()["vector_message"])["cuda"],
    reason="needs a CUDA device and a CUDA build of the op library")]


def inputs(dtype, num_nodes=64, num_edges=3000, channels=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.sort(torch.randint(0, num_nodes, (num_edges,), generator=g))[0]
    source = torch.randint(0, num_nodes, (num_edges,), generator=g)
    unit = torch.nn.functional.normalize(torch.randn(num_edges, 3, generator=g, dtype=torch.float64), dim=1)
    tensors = [torch.randn(num_nodes, 3 * channels, generator=g, dtype=torch.float64),
               torch.randn(num_edges, 3 * channels, generator=g, dtype=torch.float64),
               torch.randn(num_nodes, 3, channels, generator=g, dtype=torch.float64), unit]
    return [t.to("cuda", dtype) for t in tensors], torch.stack([source, target]).cuda()


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 1e-4), (torch.bfloat16, 0.3)])
def test_forward_and_backward_match_the_reference(dtype, atol):
    tensors, edge_index = inputs(dtype)
    exact = [t.double().requires_grad_(True) for t in tensors]
    ours = [t.clone().requires_grad_(True) for t in tensors]
    ref_out = vector_message_reference(*exact, edge_index)
    out = vector_message(*ours, edge_index, backend="cuda")
    for a, b in zip(out, ref_out):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=atol)
    sum(o.double().sum() for o in out).backward()
    sum(o.sum() for o in ref_out).backward()
    for a, b in zip(ours, exact):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=0, atol=atol * 10)


def test_deterministic():
    tensors, edge_index = inputs(torch.float32)
    first = vector_message(*tensors, edge_index, backend="cuda")
    second = vector_message(*tensors, edge_index, backend="cuda")
    assert all(torch.equal(a, b) for a, b in zip(first, second))
