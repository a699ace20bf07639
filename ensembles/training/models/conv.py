"""Convolutions that stay fast when ``jax.vmap`` runs them over ensemble members.

Vmapping ``lax.conv_general_dilated`` over members with their own kernels turns it into one
grouped convolution (``feature_group_count`` = members x groups). Its backward pass is slow on
every backend we know of: on GPU it costs as much as the dense (ungrouped) convolution
(jax-ml/jax#13800); on CPU, XLA has no fast kernel for grouped convolutions at all and emits
naive loops, and inside a while loop (the trainer's ``fori_loop``) it does not even canonicalise
the weight-gradient convolution of a plain conv (the grouped form is over an order of magnitude
slower than im2col there: benchmarks/README.md).

``Convolution`` is a drop-in ``conv_general_dilated`` for ``flax.linen.Conv`` (same parameters,
same initialisation, same arithmetic) that picks one of these formulations:

  * ``'lax'``: ``lax.conv_general_dilated`` as is (grouped convolution under vmap).
  * ``'im2col'``: the ``prod(kernel)`` shifted (and strided) slices of the padded input,
    concatenated on the feature axis, times the kernel reshaped to (taps * C_in, C_out): one
    ``dot_general``, which vmap turns into a batched matmul. Bit-identical forward outputs to
    'lax' on CPU. Costs a ``prod(kernel)``-times larger intermediate (memory traffic).
  * ``'member_loop'``: under vmap, a loop (``lax.map``) over members of plain convolutions, each
    in XLA's canonical (N, spatial, C) x (spatial, I, O) form that the CPU backend runs with a
    fast library kernel, also inside while loops; the backward pass is written out as two more
    canonical convolutions (``jax.custom_vjp`` over ``jax.custom_batching.custom_vmap``).
    Inside the trainer's ``shard_map`` each device loops over its own members. When only the
    kernel is batched (a shared input, e.g. the probes at evaluation), members fold into the
    output channels of one convolution instead; when only the input is, into its batch.
    Strided layers and layers whose output is smaller than the kernel use 'im2col' (XLA runs
    their convolutions naively, see ``_loops_well``). Not differentiable in forward mode
    (``jax.jvp``), as any ``custom_vjp``.

Depthwise convolutions (``feature_group_count`` = C_in = C_out) use ``'taps'`` with every
formulation but 'lax': the sum over kernel taps of a shifted slice times that tap's per-channel
weights, all elementwise, so vmap adds only a broadcast axis. Other groupings, dilations and
layouts fall back to 'lax'.

Defaults by backend (``DEFAULT_FORMULATIONS``), read at trace time from
``jax.default_backend()``:
  * cpu: 'member_loop'. The CPU backend runs each member's canonical convolution with its
    fast library kernel, where 'lax' gets naive loops and 'im2col' pays for its larger
    intermediate, more so as images grow and it outgrows the caches. Measured with the
    trainer (``python -m benchmarks.train --conv``) in benchmarks/README.md ("Conv
    formulations").
  * gpu, tpu and anything else: 'im2col'. Not measured here: a batched matmul is the
    accelerators' best-supported op, the grouped backward is slow on GPU (#13800), and a
    sequential loop over hundreds of members would leave an accelerator idle.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

# Formulations a ``Convolution`` accepts; 'auto' resolves by backend at trace time.
FORMULATIONS = ('lax', 'im2col', 'member_loop')
AUTO = 'auto'
# Backend -> formulation used by 'auto' (see the module docstring for the evidence).
DEFAULT_FORMULATIONS = {'cpu': 'member_loop', 'gpu': 'im2col', 'tpu': 'im2col'}
# Formulation of backends not listed in DEFAULT_FORMULATIONS.
FALLBACK_FORMULATION = 'im2col'

_Padding = tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class Convolution:
  """A ``lax.conv_general_dilated`` replacement for ``nn.Conv(conv_general_dilated=...)``.

  Hashable and compared by value, so modules built with equal formulations are equal.

  Attributes:
    formulation: 'auto' (by backend, see ``DEFAULT_FORMULATIONS``) or one of ``FORMULATIONS``.

  Example:
    >>> conv = nn.Conv(32, (3, 3), conv_general_dilated=Convolution('im2col'))
  """

  formulation: str = AUTO

  def __post_init__(self):
    if self.formulation != AUTO and self.formulation not in FORMULATIONS:
      raise ValueError(
        f'Convolution formulation={self.formulation!r}; accepted: {AUTO!r}, '
        f"{', '.join(map(repr, FORMULATIONS))}"
      )

  def resolved(self) -> str:
    """The formulation this convolution traces with on the current default backend."""
    if self.formulation != AUTO:
      return self.formulation
    return DEFAULT_FORMULATIONS.get(jax.default_backend(), FALLBACK_FORMULATION)

  def __call__(
    self,
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: lax.ConvGeneralDilatedDimensionNumbers = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: lax.PrecisionLike = None,
    preferred_element_type=None,
  ) -> jax.Array:
    """Same signature and result as ``lax.conv_general_dilated``."""
    conv_args = (lhs, rhs, window_strides, padding)
    conv_kwargs = dict(
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count,
      precision=precision,
      preferred_element_type=preferred_element_type,
    )
    formulation = self.resolved()
    spatial_ndim = lhs.ndim - 2
    supported = (
      formulation != 'lax'
      and _is_channels_last(dimension_numbers, lhs.ndim, rhs.ndim)
      and all(d == 1 for d in (lhs_dilation or ()))
      and all(d == 1 for d in (rhs_dilation or ()))
      and batch_group_count == 1
      and preferred_element_type is None
    )
    if not supported:
      return lax.conv_general_dilated(*conv_args, **conv_kwargs)
    kernel = tuple(rhs.shape[:spatial_ndim])
    strides = tuple(int(s) for s in window_strides)
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(lhs.shape[1:-1], kernel, strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    in_features, out_features = lhs.shape[-1], rhs.shape[-1]
    if feature_group_count == 1:
      if formulation == 'im2col' or not _loops_well(lhs.shape[1:-1], kernel, strides, pads):
        return _im2col_conv(lhs, rhs, strides, pads, precision)
      return _member_loop_conv(strides, pads, precision)(lhs, rhs)
    if feature_group_count == in_features == out_features and rhs.shape[-2] == 1:
      return _depthwise_taps_conv(lhs, rhs, strides, pads, precision)
    return lax.conv_general_dilated(*conv_args, **conv_kwargs)


def _is_channels_last(dimension_numbers, lhs_ndim: int, rhs_ndim: int) -> bool:
  """Whether the layout is Flax's: (N, *spatial, C) x (*spatial, I, O) -> (N, *spatial, C)."""
  if dimension_numbers is None:
    return False
  numbers = lax.conv_dimension_numbers(
    (1,) * lhs_ndim, (1,) * rhs_ndim, dimension_numbers
  )
  spatial = tuple(range(1, lhs_ndim - 1))
  return numbers == lax.ConvDimensionNumbers(
    lhs_spec=(0, lhs_ndim - 1, *spatial),
    rhs_spec=(rhs_ndim - 1, rhs_ndim - 2, *range(rhs_ndim - 2)),
    out_spec=(0, lhs_ndim - 1, *spatial),
  )


def _channels_last_numbers(spatial_ndim: int) -> lax.ConvDimensionNumbers:
  ndim = spatial_ndim + 2
  spatial = tuple(range(1, ndim - 1))
  return lax.ConvDimensionNumbers(
    lhs_spec=(0, ndim - 1, *spatial),
    rhs_spec=(ndim - 1, ndim - 2, *range(ndim - 2)),
    out_spec=(0, ndim - 1, *spatial),
  )


def _output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
  return (size + pad[0] + pad[1] - kernel) // stride + 1


def _loops_well(
  spatial: Sequence[int], kernel: tuple[int, ...], strides: tuple[int, ...], pads: _Padding
) -> bool:
  """Whether 'member_loop' keeps this layer on XLA CPU's fast convolution kernel.

  Strided layers would need an input-dilated convolution for their input gradient, and layers
  whose output is smaller than the kernel get rewritten by XLA into a swapped form; XLA runs
  both with a naive loop, a visible share of a small All-CNN's step (benchmarks/README.md).
  'member_loop' computes such layers with 'im2col'.
  """
  return all(s == 1 for s in strides) and all(
    _output_size(n, k, 1, p) >= k for n, k, p in zip(spatial, kernel, pads, strict=True)
  )


def _taps(
  x_BxPxF: jax.Array, kernel: tuple[int, ...], strides: tuple[int, ...], pads: _Padding
) -> list[jax.Array]:
  """The input window seen by each kernel tap, row-major over taps: a list of (B, *P', F)."""
  x_pad = jnp.pad(x_BxPxF, ((0, 0), *pads, (0, 0)))
  sizes = [
    _output_size(n, k, s, p)
    for n, k, s, p in zip(x_BxPxF.shape[1:-1], kernel, strides, pads, strict=True)
  ]
  taps = []
  for offsets in itertools.product(*(range(k) for k in kernel)):
    start = (0, *offsets, 0)
    limit = (
      x_pad.shape[0],
      *(o + (n - 1) * s + 1 for o, n, s in zip(offsets, sizes, strides)),
      x_pad.shape[-1],
    )
    taps.append(lax.slice(x_pad, start, limit, (1, *strides, 1)))
  return taps


def _im2col_conv(
  x_BxPxI: jax.Array,
  w_KxIxO: jax.Array,
  strides: tuple[int, ...],
  pads: _Padding,
  precision: lax.PrecisionLike,
) -> jax.Array:
  """Shifted-slice im2col and one matmul over (taps, I)."""
  kernel = w_KxIxO.shape[:-2]
  cols_BxPxTI = jnp.concatenate(_taps(x_BxPxI, kernel, strides, pads), axis=-1)
  w_TIxO = w_KxIxO.reshape(-1, w_KxIxO.shape[-1])
  contract = ((cols_BxPxTI.ndim - 1,), (0,))
  return lax.dot_general(cols_BxPxTI, w_TIxO, (contract, ((), ())), precision=precision)


def _depthwise_taps_conv(
  x_BxPxF: jax.Array,
  w_Kx1xF: jax.Array,
  strides: tuple[int, ...],
  pads: _Padding,
  precision: lax.PrecisionLike,
) -> jax.Array:
  """Depthwise convolution as a sum over taps of shifted slices times per-channel weights."""
  del precision  # Elementwise float32 products: nothing to choose.
  kernel = w_Kx1xF.shape[:-2]
  w_TxF = w_Kx1xF.reshape(-1, w_Kx1xF.shape[-1])
  taps = _taps(x_BxPxF, kernel, strides, pads)
  out_BxPxF = taps[0] * w_TxF[0]
  for t in range(1, len(taps)):
    out_BxPxF = out_BxPxF + taps[t] * w_TxF[t]
  return out_BxPxF


def _looped(conv):
  """``conv(lhs, rhs)`` whose vmap is a loop over members, or one conv where members fold.

  ``conv`` must be a canonical convolution (N, *P, I) x (*K, I, O) -> (N, *P', O) without
  groups. Under vmap: a batched lhs with a shared rhs folds members into N; a shared lhs with a
  batched rhs folds them into O; both batched loop with ``lax.map``.
  """
  looped = jax.custom_batching.custom_vmap(conv)

  @looped.def_vmap
  def rule(axis_size, in_batched, lhs, rhs):
    lhs_batched, rhs_batched = in_batched
    if lhs_batched and not rhs_batched:
      out = looped(lhs.reshape(-1, *lhs.shape[2:]), rhs)
      return out.reshape(axis_size, -1, *out.shape[1:]), True
    if rhs_batched and not lhs_batched:
      rhs_KxIxEO = jnp.moveaxis(rhs, 0, -2).reshape(*rhs.shape[1:-1], -1)
      out = looped(lhs, rhs_KxIxEO)
      out = out.reshape(*out.shape[:-1], axis_size, rhs.shape[-1])
      return jnp.moveaxis(out, -2, 0), True
    return _map_over_members(looped, lhs, rhs), True

  return looped


def _map_over_members(conv, lhs, rhs):
  """``lax.map(conv)`` over the leading (member) axis.

  The trainer runs each device's own members inside ``shard_map``, so the loop is over those.
  Called on members sharded over devices outside any ``shard_map``, XLA's partitioner gathers
  every member on every device first: correct, but each device then loops over all of them.
  """
  return lax.map(lambda operands: conv(*operands), (lhs, rhs))


@functools.lru_cache(maxsize=None)
def _member_loop_conv(strides: tuple[int, ...], pads: _Padding, precision):
  """The 'member_loop' convolution for one static configuration (cached: one per layer kind)."""
  spatial_ndim = len(strides)
  numbers = _channels_last_numbers(spatial_ndim)

  def canonical(lhs_dilation, rhs_dilation, padding, window_strides):
    def conv(lhs, rhs):
      return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=numbers,
        precision=precision,
      )

    return _looped(conv)

  ones = (1,) * spatial_ndim
  forward = canonical(ones, ones, pads, strides)
  # Weight gradient: batch and input features swap roles, the cotangent is the kernel, dilated
  # by the strides; the input is padded beforehand.
  weight_grad = canonical(ones, strides, ((0, 0),) * spatial_ndim, ones)

  @jax.custom_vjp
  def conv(x_BxPxI, w_KxIxO):
    return forward(x_BxPxI, w_KxIxO)

  def conv_fwd(x_BxPxI, w_KxIxO):
    return forward(x_BxPxI, w_KxIxO), (x_BxPxI, w_KxIxO)

  def conv_bwd(residuals, g_BxQxO):
    x_BxPxI, w_KxIxO = residuals
    kernel = w_KxIxO.shape[:-2]
    # Input gradient: the cotangent dilated by the strides, correlated with the flipped kernel
    # (input and output features swapped), padded so that exactly the input extent comes out.
    input_pads = []
    for n, k, s, (lo, _), q in zip(
      x_BxPxI.shape[1:-1], kernel, strides, pads, g_BxQxO.shape[1:-1], strict=True
    ):
      grad_lo = k - 1 - lo
      input_pads.append((grad_lo, n + k - 1 - grad_lo - ((q - 1) * s + 1)))
    input_grad = canonical(strides, ones, tuple(input_pads), ones)
    w_flipped_KxOxI = jnp.flip(w_KxIxO, tuple(range(spatial_ndim))).swapaxes(-1, -2)
    dx_BxPxI = input_grad(g_BxQxO, w_flipped_KxOxI)
    x_pad_BxPxI = jnp.pad(x_BxPxI, ((0, 0), *pads, (0, 0)))
    dw_IxKxO = weight_grad(x_pad_BxPxI.swapaxes(0, -1), jnp.moveaxis(g_BxQxO, 0, -2))
    dw_IxKxO = dw_IxKxO[(slice(None), *(slice(k) for k in kernel))]
    return dx_BxPxI, jnp.moveaxis(dw_IxKxO, 0, -2)

  conv.defvjp(conv_fwd, conv_bwd)
  return conv


__all__ = [
  'AUTO',
  'Convolution',
  'DEFAULT_FORMULATIONS',
  'FALLBACK_FORMULATION',
  'FORMULATIONS',
]
