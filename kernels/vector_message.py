"""Triton kernels of the fused scalar-vector message op (arithmetic as csrc/include/e3relax/
vector_message_common.h; the registered op is in ``e3relax_fast/ops/vector_message_triton.py``).

Forward: one program per target node i holding all F channels in one block (BLOCK = next power of two
of F); it walks i's edges rowptr[i]..rowptr[i+1] in order, accumulating in registers, and writes dh[i],
dvec[i] once. Backward: one program per source node j walking its edges in perm order (the transposed
CSR): grad_w[e] and grad_unit[e] (a sum over the channel block) are written once per edge,
grad_phi[j], grad_vec[j] accumulate in registers. No atomics; a fixed reduction order.
Layout: phi [N,3F], w [E,3F], vec [N,3,F], unit [E,3], contiguous. Accumulation in ACC (float32 for
half/bfloat16 inputs, else the input dtype).
"""

import triton
import triton.language as tl


@triton.jit
def vector_message_forward_kernel(phi, w, vec, unit, rowptr, source, dh, dvec, F,
                                  BLOCK: tl.constexpr, ACC: tl.constexpr):
    i = tl.program_id(0)
    # scales in ACC precision (a Python float argument would arrive as float32)
    scale_h = 1.0 / tl.sqrt(tl.full([], 3.0, ACC))
    scale_v = scale_h / tl.sqrt(tl.full([], F, ACC))
    c = tl.arange(0, BLOCK)
    mask = c < F
    start = tl.load(rowptr + i)
    end = tl.load(rowptr + i + 1)
    sh = tl.zeros([BLOCK], dtype=ACC)
    sx = tl.zeros([BLOCK], dtype=ACC)
    sy = tl.zeros([BLOCK], dtype=ACC)
    sz = tl.zeros([BLOCK], dtype=ACC)
    for e in range(start, end):
        j = tl.load(source + e)
        p = phi + j * 3 * F
        we = w + e * 3 * F
        v = vec + j * 3 * F
        a = tl.load(p + c, mask=mask, other=0).to(ACC) * tl.load(we + c, mask=mask, other=0).to(ACC)
        b = tl.load(p + F + c, mask=mask, other=0).to(ACC) * tl.load(we + F + c, mask=mask, other=0).to(ACC)
        h = tl.load(p + 2 * F + c, mask=mask, other=0).to(ACC) * tl.load(we + 2 * F + c, mask=mask, other=0).to(ACC)
        ux = tl.load(unit + 3 * e).to(ACC)
        uy = tl.load(unit + 3 * e + 1).to(ACC)
        uz = tl.load(unit + 3 * e + 2).to(ACC)
        sh += h
        sx += a * tl.load(v + c, mask=mask, other=0).to(ACC) + ux * b
        sy += a * tl.load(v + F + c, mask=mask, other=0).to(ACC) + uy * b
        sz += a * tl.load(v + 2 * F + c, mask=mask, other=0).to(ACC) + uz * b
    out_dtype = dh.dtype.element_ty
    tl.store(dh + i * F + c, (sh * scale_h).to(out_dtype), mask=mask)
    tl.store(dvec + i * 3 * F + c, (sx * scale_v).to(out_dtype), mask=mask)
    tl.store(dvec + i * 3 * F + F + c, (sy * scale_v).to(out_dtype), mask=mask)
    tl.store(dvec + i * 3 * F + 2 * F + c, (sz * scale_v).to(out_dtype), mask=mask)


@triton.jit
def vector_message_backward_kernel(grad_dh, grad_dvec, phi, w, vec, unit, target, perm, source_ptr,
                                   grad_phi, grad_w, grad_vec, grad_unit, F,
                                   BLOCK: tl.constexpr, ACC: tl.constexpr):
    j = tl.program_id(0)
    s = 1.0 / tl.sqrt(tl.full([], 3.0, ACC))
    t = 1.0 / tl.sqrt(tl.full([], F, ACC))
    c = tl.arange(0, BLOCK)
    mask = c < F
    p = phi + j * 3 * F
    v = vec + j * 3 * F
    pa = tl.load(p + c, mask=mask, other=0).to(ACC)
    pb = tl.load(p + F + c, mask=mask, other=0).to(ACC)
    pc = tl.load(p + 2 * F + c, mask=mask, other=0).to(ACC)
    vx = tl.load(v + c, mask=mask, other=0).to(ACC)
    vy = tl.load(v + F + c, mask=mask, other=0).to(ACC)
    vz = tl.load(v + 2 * F + c, mask=mask, other=0).to(ACC)
    gpa = tl.zeros([BLOCK], dtype=ACC)
    gpb = tl.zeros([BLOCK], dtype=ACC)
    gpc = tl.zeros([BLOCK], dtype=ACC)
    gvx = tl.zeros([BLOCK], dtype=ACC)
    gvy = tl.zeros([BLOCK], dtype=ACC)
    gvz = tl.zeros([BLOCK], dtype=ACC)
    start = tl.load(source_ptr + j)
    end = tl.load(source_ptr + j + 1)
    out_dtype = grad_w.dtype.element_ty
    for k in range(start, end):
        e = tl.load(perm + k)
        i = tl.load(target + e)
        we = w + e * 3 * F
        g = grad_dvec + i * 3 * F
        wa = tl.load(we + c, mask=mask, other=0).to(ACC)
        wb = tl.load(we + F + c, mask=mask, other=0).to(ACC)
        wc = tl.load(we + 2 * F + c, mask=mask, other=0).to(ACC)
        gx = tl.load(g + c, mask=mask, other=0).to(ACC)
        gy = tl.load(g + F + c, mask=mask, other=0).to(ACC)
        gz = tl.load(g + 2 * F + c, mask=mask, other=0).to(ACC)
        gh = tl.load(grad_dh + i * F + c, mask=mask, other=0).to(ACC)
        ux = tl.load(unit + 3 * e).to(ACC)
        uy = tl.load(unit + 3 * e + 1).to(ACC)
        uz = tl.load(unit + 3 * e + 2).to(ACC)
        ga = t * (gx * vx + gy * vy + gz * vz)
        gb = t * (gx * ux + gy * uy + gz * uz)
        a = pa * wa
        b = pb * wb
        gw = grad_w + e * 3 * F
        tl.store(gw + c, (s * ga * pa).to(out_dtype), mask=mask)
        tl.store(gw + F + c, (s * gb * pb).to(out_dtype), mask=mask)
        tl.store(gw + 2 * F + c, (s * gh * pc).to(out_dtype), mask=mask)
        gpa += s * ga * wa
        gpb += s * gb * wb
        gpc += s * gh * wc
        st = s * t
        gvx += st * a * gx
        gvy += st * a * gy
        gvz += st * a * gz
        tl.store(grad_unit + 3 * e, tl.sum(st * gx * b, axis=0).to(out_dtype))
        tl.store(grad_unit + 3 * e + 1, tl.sum(st * gy * b, axis=0).to(out_dtype))
        tl.store(grad_unit + 3 * e + 2, tl.sum(st * gz * b, axis=0).to(out_dtype))
    tl.store(grad_phi + j * 3 * F + c, gpa.to(out_dtype), mask=mask)
    tl.store(grad_phi + j * 3 * F + F + c, gpb.to(out_dtype), mask=mask)
    tl.store(grad_phi + j * 3 * F + 2 * F + c, gpc.to(out_dtype), mask=mask)
    tl.store(grad_vec + j * 3 * F + c, gvx.to(out_dtype), mask=mask)
    tl.store(grad_vec + j * 3 * F + F + c, gvy.to(out_dtype), mask=mask)
    tl.store(grad_vec + j * 3 * F + 2 * F + c, gvz.to(out_dtype), mask=mask)
