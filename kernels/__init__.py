"""Raw Triton kernels, installed as ``e3relax_fast.kernels``.

Only kernel bodies live here; ``e3relax_fast.ops`` wraps them as registered ops with references and
dispatch. Triton is imported lazily by the modules of this package, never at package import, so a
CPU-only install never touches it. On a CPU the kernels run only under ``TRITON_INTERPRET=1``.

Kernels: ``vector_message`` (forward and backward of the fused scalar-vector message aggregation).
Which ops have a Triton implementation is said in one place, ``e3relax_fast/ops/registry.py``.
"""
