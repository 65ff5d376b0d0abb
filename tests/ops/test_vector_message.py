"""The reference scalar-vector message aggregation against its definition, written as a loop."""

import math

import pytest
import torch

from e3relax_fast.ops import vector_message, vector_message_reference


def random_inputs(num_nodes=6, num_edges=20, channels=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    target = torch.sort(torch.randint(0, num_nodes, (num_edges,), generator=g))[0]
    source = torch.randint(0, num_nodes, (num_edges,), generator=g)
    unit = torch.randn(num_edges, 3, generator=g, dtype=dtype)
    return (torch.randn(num_nodes, 3 * channels, generator=g, dtype=dtype),
            torch.randn(num_edges, 3 * channels, generator=g, dtype=dtype),
            torch.randn(num_nodes, 3, channels, generator=g, dtype=dtype),
            unit / unit.norm(dim=1, keepdim=True),
            torch.stack([source, target]))


def loop_oracle(phi, w, vec, unit, edge_index):
    num_nodes, _, channels = vec.shape
    dh = torch.zeros(num_nodes, channels, dtype=phi.dtype)
    dvec = torch.zeros(num_nodes, 3, channels, dtype=phi.dtype)
    for e in range(edge_index.shape[1]):
        j, i = int(edge_index[0, e]), int(edge_index[1, e])
        a, b, c = (phi[j] * w[e] / math.sqrt(3)).split(channels)
        dh[i] += c
        dvec[i] += (a * vec[j] + torch.outer(unit[e], b)) / math.sqrt(channels)
    return dh, dvec


def test_reference_matches_the_definition():
    inputs = random_inputs()
    for ours, oracle in zip(vector_message(*inputs, backend="torch"), loop_oracle(*inputs)):
        torch.testing.assert_close(ours, oracle, rtol=0, atol=1e-12)


def test_nodes_without_incoming_edges_get_zero():
    phi, w, vec, unit, edge_index = random_inputs(num_nodes=8)
    edge_index[1] = torch.clamp(edge_index[1], max=3)  # nodes 4..7 receive nothing
    dh, dvec = vector_message_reference(phi, w, vec, unit, edge_index)
    assert torch.count_nonzero(dh[4:]) == 0 and torch.count_nonzero(dvec[4:]) == 0


def test_empty_graph():
    phi, w, vec, unit, edge_index = random_inputs(num_edges=0)
    dh, dvec = vector_message_reference(phi, w, vec, unit, edge_index)
    assert dh.shape == (6, 4) and dvec.shape == (6, 3, 4)
    assert torch.count_nonzero(dh) == 0 and torch.count_nonzero(dvec) == 0


def test_gradcheck_all_inputs():
    phi, w, vec, unit, edge_index = random_inputs(num_nodes=4, num_edges=9, channels=2)
    tensors = [t.requires_grad_(True) for t in (phi, w, vec, unit)]
    assert torch.autograd.gradcheck(lambda *t: vector_message_reference(*t, edge_index), tensors)


def test_equivariant_under_rotation():
    phi, w, vec, unit, edge_index = random_inputs()
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    dh, dvec = vector_message_reference(phi, w, vec, unit, edge_index)
    dh_r, dvec_r = vector_message_reference(phi, w, torch.einsum("xy,nyf->nxf", rotation, vec),
                                            unit @ rotation.T, edge_index)
    torch.testing.assert_close(dh_r, dh, rtol=0, atol=1e-12)
    torch.testing.assert_close(dvec_r, torch.einsum("xy,nyf->nxf", rotation, dvec), rtol=0, atol=1e-12)


def test_unavailable_fused_backend_says_why():
    from e3relax_fast.ops import backend_report

    missing = [a for a in backend_report()["vector_message"] if not a.available]
    assert missing, "some backend is always missing on a CPU machine (cuda needs a device)"
    with pytest.raises(RuntimeError, match=f"backend '{missing[0].backend}' for vector_message is unavailable: .+"):
        vector_message(*random_inputs(), backend=missing[0].backend)
