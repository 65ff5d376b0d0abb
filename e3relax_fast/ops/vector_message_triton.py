"""The Triton vector_message, registered with ``torch.library.triton_op`` (kernels in
``e3relax_fast.kernels.vector_message``), with autograd through a second Triton op for the backward.

Imported only when the ``triton`` backend is selected: importing it needs Triton, and on a CPU the
kernels run only under ``TRITON_INTERPRET=1``. Triton ops cannot run inside TorchScript; scripted models
use the C++/CUDA op or the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from ..kernels.vector_message import vector_message_backward_kernel, vector_message_forward_kernel

_MAX_CHANNELS = 1024


def _meta(vec: Tensor) -> tuple[int, int, object]:
    channels = vec.shape[2]
    if channels > _MAX_CHANNELS:
        raise ValueError(f"vector_message (triton): at most {_MAX_CHANNELS} channels, got {channels}")
    accumulate = tl.float64 if vec.dtype == torch.float64 else tl.float32  # half/bf16 accumulate in float32
    return channels, triton.next_power_of_2(max(channels, 1)), accumulate


@triton_op("e3relax::vector_message_triton", mutates_args=())
def vector_message_triton(phi: Tensor, w: Tensor, vec: Tensor, unit: Tensor, rowptr: Tensor, source: Tensor,
                          target: Tensor, perm: Tensor, source_ptr: Tensor) -> tuple[Tensor, Tensor]:
    """Same contract as ``torch.ops.e3relax.vector_message`` (see csrc/ops.cpp)."""
    channels, block, accumulate = _meta(vec)
    num_nodes = vec.shape[0]
    dh = vec.new_empty((num_nodes, channels))
    dvec = torch.empty_like(vec, memory_format=torch.contiguous_format)
    if num_nodes:
        wrap_triton(vector_message_forward_kernel)[(num_nodes,)](
            phi.contiguous(), w.contiguous(), vec.contiguous(), unit.contiguous(), rowptr, source, dh, dvec,
            channels, BLOCK=block, ACC=accumulate)
    return dh, dvec


@triton_op("e3relax::vector_message_triton_backward", mutates_args=())
def vector_message_triton_backward(grad_dh: Tensor, grad_dvec: Tensor, phi: Tensor, w: Tensor, vec: Tensor,
                                   unit: Tensor, target: Tensor, perm: Tensor, source_ptr: Tensor
                                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    channels, block, accumulate = _meta(vec)
    num_nodes = vec.shape[0]
    grad_phi = torch.empty_like(phi, memory_format=torch.contiguous_format)
    grad_vec = torch.empty_like(vec, memory_format=torch.contiguous_format)
    grad_w = torch.zeros_like(w, memory_format=torch.contiguous_format)
    grad_unit = torch.zeros_like(unit, memory_format=torch.contiguous_format)
    if num_nodes:
        wrap_triton(vector_message_backward_kernel)[(num_nodes,)](
            grad_dh.to(phi.dtype).contiguous(), grad_dvec.to(phi.dtype).contiguous(), phi.contiguous(),
            w.contiguous(), vec.contiguous(), unit.contiguous(), target, perm, source_ptr, grad_phi, grad_w,
            grad_vec, grad_unit, channels, BLOCK=block, ACC=accumulate)
    return grad_phi, grad_w, grad_vec, grad_unit


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_dh: Tensor | None, grad_dvec: Tensor | None):
    phi, w, vec, unit, rowptr, source, target, perm, source_ptr = ctx.saved_tensors
    if grad_dh is None:
        grad_dh = vec.new_zeros((vec.shape[0], vec.shape[2]))
    if grad_dvec is None:
        grad_dvec = torch.zeros_like(vec)
    grads = vector_message_triton_backward(grad_dh, grad_dvec, phi, w, vec, unit, target, perm, source_ptr)
    return (*grads, None, None, None, None, None)


vector_message_triton.register_autograd(_backward, setup_context=_setup_context)
