"""pytest-benchmark view of vector_message, fwd+bwd, reference vs fused (python -m pytest bench)."""

import pytest
import torch

from e3relax_fast.ops import backend_report, message_graph, vector_message

ATOMS, EDGES_PER_ATOM, CHANNELS = 2000, 56, 128


def problem():
    g = torch.Generator().manual_seed(0)
    edges = ATOMS * EDGES_PER_ATOM
    edge_index = torch.stack([torch.randint(0, ATOMS, (edges,), generator=g),
                              torch.arange(ATOMS).repeat_interleave(EDGES_PER_ATOM)])
    tensors = [torch.randn(ATOMS, 3 * CHANNELS, generator=g), torch.randn(edges, 3 * CHANNELS, generator=g),
               torch.randn(ATOMS, 3, CHANNELS, generator=g),
               torch.nn.functional.normalize(torch.randn(edges, 3, generator=g), dim=1)]
    return [t.requires_grad_(True) for t in tensors], edge_index, message_graph(edge_index, ATOMS)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_vector_message_forward_backward(benchmark, backend):
    if not dict((a.backend, a.available) for a in backend_report()["vector_message"])[backend]:
        pytest.skip(f"backend {backend} unavailable")
    tensors, edge_index, graph_arrays = problem()

    def step():
        dh, dvec = vector_message(*tensors, edge_index, backend=backend, message_graph=graph_arrays)
        (dh.sum() + dvec.sum()).backward()

    benchmark.group = f"vector_message fwd+bwd N={ATOMS} F={CHANNELS}"
    benchmark(step)
    assert tensors[0].grad is not None
