"""Triton GEMM kernels for low-bit weights (GPU; on CPU through ``TRITON_INTERPRET=1``).

- :func:`wq_matmul`: fp16 activations x packed 1/2/4/8-bit weights with per-channel or
  per-group scales (int4 x fp16, binary, ternary share one kernel; ``BITS`` is a compile-time
  constant so each width gets its own specialised binary).
  ``gemv=True`` selects a one-row-per-program kernel without tensor cores for M <= 4.
- :func:`w8a8_matmul`: int8 activation codes x int8 weight codes on the int8 tensor cores,
  int32 accumulation, affine activation zero point folded in through the weight column sums.

Weights are packed along K (the reduction) as ``[ceil(K / per), N]`` int32 words (see
:mod:`autocomp.kernels.packing`), so one program's loads are contiguous along N. Block sizes and
the split-K heuristic were chosen without a GPU at hand; ``benchmarks/kernels.py`` sweeps them on
one so that the defaults can follow measurements.

Example:
    >>> y = wq_matmul(x16, packed, scales, bits=4, k=4096)     # doctest: +SKIP
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ModuleNotFoundError as e:  # pragma: no cover - exercised only without the extra
    raise ModuleNotFoundError("the Triton kernels need triton: pip install 'autocomp[kernels]'") from e


@triton.jit
def _weight_tile(w_ptr, s_ptr, k0, offs_k, k_ok, offs_n, n_ok, K, GROUP, stride_wk, stride_wn, stride_sg, stride_sn,
                 BITS: tl.constexpr, PER_CHANNEL: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """The [BLOCK_K, BLOCK_N] weight tile from row ``k0`` as float signed codes (times their group
    scales unless per channel; rows past K are zero).

    Each packed word is loaded once ([BLOCK_K / PER, BLOCK_N]) and its PER codes fanned out along a
    middle axis; row-major reshape puts code i of word j at k = j * PER + i.
    """
    PER: tl.constexpr = 32 // BITS
    MASK: tl.constexpr = (1 << BITS) - 1
    offs_w = k0 // PER + tl.arange(0, BLOCK_K // PER)
    words = tl.load(w_ptr + offs_w[:, None] * stride_wk + offs_n[None, :] * stride_wn,
                    mask=(offs_w[:, None] < tl.cdiv(K, PER)) & n_ok[None, :], other=0)
    u = (words[:, None, :] >> (tl.arange(0, PER) * BITS)[None, :, None]) & MASK
    u = tl.reshape(u, (BLOCK_K, BLOCK_N))
    if BITS == 1:
        q = (2 * u - 1).to(tl.float32)
    else:
        q = (u - (1 << (BITS - 1))).to(tl.float32)
    q = tl.where(k_ok[:, None], q, 0.0)
    if not PER_CHANNEL:
        q = q * tl.load(s_ptr + (offs_k // GROUP)[:, None] * stride_sg + offs_n[None, :] * stride_sn,
                        mask=k_ok[:, None] & n_ok[None, :], other=0.0)
    return q


@triton.jit
def _wq_kernel(x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, M, N, K, GROUP,
               stride_xm, stride_xk, stride_wk, stride_wn, stride_sg, stride_sn, stride_ym, stride_yn,
               BITS: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_BIAS: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_iters = tl.cdiv(K, BLOCK_K * SPLIT_K)
    for it in range(0, k_iters):
        k0 = (it * SPLIT_K + pid_k) * BLOCK_K
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=(offs_m[:, None] < M) & k_ok[None, :], other=0.0)
        q = _weight_tile(w_ptr, s_ptr, k0, offs_k, k_ok, offs_n, offs_n < N, K, GROUP, stride_wk, stride_wn,
                         stride_sg, stride_sn, BITS, PER_CHANNEL, BLOCK_K, BLOCK_N)
        acc += tl.dot(x.to(tl.float16), q.to(tl.float16))
    if PER_CHANNEL:
        s = tl.load(s_ptr + offs_n * stride_sn, mask=offs_n < N, other=0.0)
        acc = acc * s[None, :]
    if HAS_BIAS:
        if pid_k == 0:
            bias = tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0)
            acc += bias[None, :]
    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    y_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if SPLIT_K == 1:
        tl.store(y_ptrs, acc, mask=y_mask)
    else:
        tl.atomic_add(y_ptrs, acc, mask=y_mask)


@triton.jit
def _wq_gemv_kernel(x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, N, K, GROUP,
                    stride_xm, stride_xk, stride_wk, stride_wn, stride_sg, stride_sn, stride_ym, stride_yn,
                    BITS: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_BIAS: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    """One activation row per program, no tensor cores: for M of 1..4 the dot's 16-row padding
    is pure waste and the kernel is bound by reading the packed weights."""
    row = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for it in range(0, tl.cdiv(K, BLOCK_K * SPLIT_K)):
        k0 = (it * SPLIT_K + pid_k) * BLOCK_K
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        x = tl.load(x_ptr + row * stride_xm + offs_k * stride_xk, mask=k_ok, other=0.0).to(tl.float32)
        q = _weight_tile(w_ptr, s_ptr, k0, offs_k, k_ok, offs_n, n_ok, K, GROUP, stride_wk, stride_wn,
                         stride_sg, stride_sn, BITS, PER_CHANNEL, BLOCK_K, BLOCK_N)
        acc += tl.sum(x[:, None] * q, axis=0)
    if PER_CHANNEL:
        acc = acc * tl.load(s_ptr + offs_n * stride_sn, mask=n_ok, other=0.0)
    if HAS_BIAS:
        if pid_k == 0:
            acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0)
    y_ptrs = y_ptr + row * stride_ym + offs_n * stride_yn
    if SPLIT_K == 1:
        tl.store(y_ptrs, acc, mask=n_ok)
    else:
        tl.atomic_add(y_ptrs, acc, mask=n_ok)


@triton.jit
def _w8a8_kernel(x_ptr, w_ptr, colsum_ptr, ws_ptr, b_ptr, y_ptr, M, N, K, x_scale, x_zp,
                 stride_xm, stride_xk, stride_wk, stride_wn, stride_ym, stride_yn,
                 HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0)
        w = tl.load(w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn,
                    mask=(offs_k[:, None] < K) & (offs_n[None, :] < N), other=0)
        acc += tl.dot(x, w, out_dtype=tl.int32)
    n_ok = offs_n < N
    colsum = tl.load(colsum_ptr + offs_n, mask=n_ok, other=0)
    ws = tl.load(ws_ptr + offs_n, mask=n_ok, other=0.0)
    # y = s_x * s_w * sum_k (xq - zp) w  with  sum_k zp * w = zp * colsum
    out = (acc - x_zp * colsum[None, :]).to(tl.float32) * (x_scale * ws[None, :])
    if HAS_BIAS:
        out += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0)[None, :]
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn, out,
             mask=(offs_m[:, None] < M) & n_ok[None, :])


def _block_m(m: int) -> int:
    return 16 if m <= 16 else (32 if m <= 32 else 64)


def wq_matmul(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, bits: int, k: int,
              bias: torch.Tensor | None = None, group: int | None = None, split_k: int | None = None,
              block_n: int = 64, block_k: int = 64, gemv: bool = False) -> torch.Tensor:
    """``x @ dequant(packed).T`` for packed ``bits``-bit weights.

    Args:
        x: [M, K] activations (cast to fp16 inside the kernel).
        packed: [ceil(K / (32 // bits)), N] int32 words from ``pack(codes.T, bits, dim=0)``.
        scales: [N] per-channel, or [ceil(K / group), N] per-group scales (fp32).
        bits: 1, 2, 4 or 8.
        k: the reduction size K.
        bias: optional [N].
        group: the group size along K for per-group scales (None: per channel).
        split_k: programs sharing the K loop (atomic adds); default picks one from the grid.
        gemv: use the one-row-per-program kernel without tensor cores (meant for M <= 4;
            ``benchmarks/kernels.py`` times both on a GPU).

    Returns:
        [M, N] float32.
    """
    m, n = x.shape[0], packed.shape[1]
    if block_k % 32:
        raise ValueError("block_k must be a multiple of 32 (whole packed words for every bit width)")
    per_channel = group is None
    bm = 1 if gemv else _block_m(m)
    grid_mn = triton.cdiv(m, bm) * triton.cdiv(n, block_n)
    if split_k is None:
        # Few output tiles (small M) would leave most SMs idle: split the K loop instead.
        split_k = max(1, min(16, 512 // max(grid_mn, 1), triton.cdiv(k, block_k)))
    y = (torch.zeros if split_k > 1 else torch.empty)((m, n), device=x.device, dtype=torch.float32)
    sc = scales.float().reshape(1, -1) if per_channel else scales.float()
    b = bias.float() if bias is not None else y
    grid = (triton.cdiv(m, bm), triton.cdiv(n, block_n), split_k)
    if gemv:
        _wq_gemv_kernel[grid](x, packed, sc, b, y, n, k, group or k,
                              x.stride(0), x.stride(1), packed.stride(0), packed.stride(1), sc.stride(0),
                              sc.stride(1), y.stride(0), y.stride(1), BITS=bits, PER_CHANNEL=per_channel,
                              HAS_BIAS=bias is not None, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split_k)
        return y
    _wq_kernel[grid](x, packed, sc, b, y, m, n, k, group or k,
                     x.stride(0), x.stride(1), packed.stride(0), packed.stride(1), sc.stride(0), sc.stride(1),
                     y.stride(0), y.stride(1), BITS=bits, PER_CHANNEL=per_channel, HAS_BIAS=bias is not None,
                     BLOCK_M=bm, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split_k)
    return y


def w8a8_matmul(xq: torch.Tensor, x_scale: float, x_zp: int, wq_t: torch.Tensor, colsum: torch.Tensor,
                w_scale: torch.Tensor, bias: torch.Tensor | None = None,
                block_n: int = 64, block_k: int = 64) -> torch.Tensor:
    """``s_x (xq - zp) @ (s_w wq_t)`` with int8 codes and int32 accumulation.

    Args:
        xq: [M, K] int8 activation codes (unsigned codes shifted by -128).
        x_scale, x_zp: the per-tensor scale and the zero point in the shifted code space.
        wq_t: [K, N] int8 weight codes; ``colsum`` its int32 column sums [N].
        w_scale: [N] per-channel weight scales.

    Returns:
        [M, N] float32.
    """
    m, k = xq.shape
    n = wq_t.shape[1]
    bm = _block_m(m)
    y = torch.empty((m, n), device=xq.device, dtype=torch.float32)
    b = bias.float() if bias is not None else y
    grid = (triton.cdiv(m, bm), triton.cdiv(n, block_n))
    _w8a8_kernel[grid](xq, wq_t, colsum, w_scale.float(), b, y, m, n, k, float(x_scale), int(x_zp),
                       xq.stride(0), xq.stride(1), wq_t.stride(0), wq_t.stride(1), y.stride(0), y.stride(1),
                       HAS_BIAS=bias is not None, BLOCK_M=bm, BLOCK_N=block_n, BLOCK_K=block_k)
    return y
