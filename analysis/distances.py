"""Intensive Bhattacharyya distances between models given by their predicted probabilities.

    d_B(P, Q) = -(1/N) sum_n log BC_n,    BC_n = sum_c sqrt(P[n, c] Q[n, c])

For m points the coefficients of one sample form the Gram matrix S_n S_n^T with
S_n = sqrt(P[:, n, :]) (m x C), so the distance matrix is a sum over samples of the log of
small matmuls. How it is computed here, and why (measurements in benchmarks/gram.py):

* Samples stream from the input in chunks (a few MiB each), so neither a transposed copy of the
  input nor an (m, m', N) tensor ever exists: memory is the (m, m') accumulator plus one chunk.
* Within a chunk, the output is cut into (block x block) tiles; ``_tile_log_bc_sum`` computes
  one tile and is the unit a sharded version can map over devices. With ``q=None`` only tiles on
  or above the diagonal are computed and the result is mirrored.
* Each sample's coefficients come from one 2-D (block x C) @ (C x block) matmul (XLA's batched
  matmul with K = C = 10 was 10x slower), and the log - up to 40% of the time in isolated
  tile measurements when it runs once per (pair, sample) - runs once per ``SAMPLES_PER_LOG``
  samples, on the product of their clipped coefficients (log(a b) = log a + log b).

Numerics: each coefficient is clipped to [BC_CLIP, 1] before the product. The lower clip bounds
one sample's contribution to -log(BC_CLIP)/N (it only acts when two models put disjoint mass on
a sample, e.g. two different one-hot predictions); the upper clip removes float rounding above
the Cauchy-Schwarz bound BC <= 1, so d_B >= 0 and d_B(P, P) is ~1e-7, not negative. A product
of SAMPLES_PER_LOG clipped coefficients is at least BC_CLIP**SAMPLES_PER_LOG = 1e-36, still a
normal float32 (smallest 1.2e-38), so neither underflow nor flush-to-zero can turn it into
log(0); one more factor could. Sums run in float32 over at most a chunk of samples, then
across chunks: agreement with a float64 reference is ~1e-7 (tested to 1e-5 in
tests/analysis/test_distances.py; 8e-8 against NumPy at m = 2,000, N = 1,797).
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from analysis import checks

# Lower clip of each per-sample Bhattacharyya coefficient (the authors used 1e-6 or 1e-9). With
# 1e-6 a sample contributes at most -log(1e-6) = 13.8 nats / N to a distance.
BC_CLIP = 1e-6

# Samples whose clipped coefficients are multiplied before one log: the largest k with
# BC_CLIP**k above the smallest normal float32, so the product can neither underflow nor be
# flushed to zero (6 for BC_CLIP = 1e-6).
SAMPLES_PER_LOG = int(math.log(np.finfo(np.float32).tiny) / math.log(BC_CLIP))

# Largest side of an output tile. 512 x 512 tiles ran at ~2.5e9 pair-samples/s on 2 cores,
# 256 x 256 at ~1.6e9 (per-call overhead); larger tiles stop fitting the 2 MiB L2 cache.
MAX_BLOCK = 512

# Target size of one chunk of samples for all points of p (and q), as float32. The chunk is
# read, converted and padded on the host, then transposed on the device: a few copies of it are
# the working memory on top of the (m, m') accumulator.
CHUNK_BYTES = 8 * 2**20

# Number of times each jitted function was traced, by name: tests use it to check that calls of
# the same shapes do not recompile.
TRACE_COUNTS: collections.Counter[str] = collections.Counter()


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def _block_size(num_points: int) -> int:
  """Tile side: MAX_BLOCK at most, equal blocks so the last one is not mostly padding."""
  num_blocks = -(-num_points // MAX_BLOCK)
  return -(-num_points // num_blocks)


def _chunk_size(num_samples: int, padded_points: int, num_classes: int, group: int) -> int:
  """Samples per chunk: a multiple of ``group``, near CHUNK_BYTES, chunks of equal size."""
  bytes_per_sample = 4 * padded_points * num_classes
  largest = max(group, CHUNK_BYTES // bytes_per_sample // group * group)
  num_chunks = -(-num_samples // largest)
  return _round_up(-(-num_samples // num_chunks), group)


def sqrt_probs(p: jax.Array) -> jax.Array:
  """sqrt(p) after renormalising each row over the last axis (removes float16 rounding)."""
  p = p.astype(jnp.float32)
  return jnp.sqrt(p / jnp.sum(p, axis=-1, keepdims=True))


def _sqrt_groups(chunk_MxNcxC: jax.Array, group: int) -> jax.Array:
  """sqrt_probs laid out (groups, group, points, C) for the tiles."""
  m, n, c = chunk_MxNcxC.shape
  return sqrt_probs(chunk_MxNcxC).reshape(m, n // group, group, c).transpose(1, 2, 0, 3)


def _tile_log_bc_sum(sp_GxKxBxC: jax.Array, sq_GxKxBxC: jax.Array) -> jax.Array:
  """One output tile: sum over the G*K samples of log(clip(BC)), shape (B, B').

  Args:
    sp_GxKxBxC: square-root probabilities of the tile's B row points, samples in G groups of K.
    sq_GxKxBxC: the same for its B' column points.

  Returns:
    (B, B') float32 sum_n log clip(<sp_n, sq_n>, BC_CLIP, 1): minus N times the distances.
  """

  def add_group(total_BxB, group):
    sp_KxBxC, sq_KxBxC = group
    product_BxB = None
    for k in range(sp_KxBxC.shape[0]):
      bc_BxB = jnp.clip(sp_KxBxC[k] @ sq_KxBxC[k].T, BC_CLIP, 1.0)
      product_BxB = bc_BxB if product_BxB is None else product_BxB * bc_BxB
    return total_BxB + jnp.log(product_BxB), None

  zeros_BxB = jnp.zeros((sp_GxKxBxC.shape[2], sq_GxKxBxC.shape[2]), jnp.float32)
  total_BxB, _ = lax.scan(add_group, zeros_BxB, (sp_GxKxBxC, sq_GxKxBxC))
  return total_BxB


def _tile_grid(rows: int, cols: int, symmetric: bool) -> np.ndarray:
  """(T, 2) block coordinates of the tiles to compute: upper triangle only when symmetric."""
  return np.array([(i, j) for i in range(rows) for j in range(cols) if not symmetric or i <= j],
                  np.int32).reshape(-1, 2)


@functools.partial(jax.jit, static_argnames=('blocks', 'group', 'symmetric'), donate_argnums=0)
def _accumulate_chunk(acc_MxM: jax.Array, p_chunk: jax.Array, q_chunk: jax.Array | None, *,
                      blocks: tuple[int, int], group: int, symmetric: bool) -> jax.Array:
  """Adds one chunk of samples' sum of log coefficients to the (padded) accumulator.

  Args:
    acc_MxM: (rows, cols) running sums, both multiples of the block sizes (donated).
    p_chunk: (rows, n, C) probabilities of the row points on n samples, n a multiple of group.
    q_chunk: (cols, n, C) for the column points, or None when symmetric.
    blocks: (row block, column block) tile shape.
    group: samples per log.
    symmetric: q is p; only tiles on or above the diagonal are computed.
  """
  TRACE_COUNTS['accumulate_chunk'] += 1
  block_rows, block_cols = blocks
  sp_GxKxMxC = _sqrt_groups(p_chunk, group)
  sq_GxKxMxC = sp_GxKxMxC if symmetric else _sqrt_groups(q_chunk, group)
  grid = _tile_grid(acc_MxM.shape[0] // block_rows, acc_MxM.shape[1] // block_cols, symmetric)
  tiles_Tx2 = jnp.asarray(grid * np.array([block_rows, block_cols], np.int32))

  def add_tile(t, acc):
    row, col = tiles_Tx2[t, 0], tiles_Tx2[t, 1]
    tile_BxB = _tile_log_bc_sum(lax.dynamic_slice_in_dim(sp_GxKxMxC, row, block_rows, axis=2),
                                lax.dynamic_slice_in_dim(sq_GxKxMxC, col, block_cols, axis=2))
    current_BxB = lax.dynamic_slice(acc, (row, col), (block_rows, block_cols))
    return lax.dynamic_update_slice(acc, current_BxB + tile_BxB, (row, col))

  return lax.fori_loop(0, tiles_Tx2.shape[0], add_tile, acc_MxM)


@functools.partial(jax.jit, static_argnames=('shape', 'symmetric'))
def _finish(acc_MxM: jax.Array, num_samples: int, *, shape: tuple[int, int],
            symmetric: bool) -> jax.Array:
  """Distances from the accumulated log sums: mirror the upper triangle, scale, crop padding.

  The upper triangle (i <= j) lies in computed tiles; mirroring it element by element makes
  the result exactly symmetric, also inside diagonal tiles.
  """
  TRACE_COUNTS['finish'] += 1
  if symmetric:
    index_M = jnp.arange(acc_MxM.shape[0])
    acc_MxM = jnp.where(index_M[:, None] <= index_M[None, :], acc_MxM, acc_MxM.T)
  return -acc_MxM[:shape[0], :shape[1]] / num_samples


def _padded_chunk(p: Any, start: int, size: int, padded_points: int) -> np.ndarray:
  """Samples [start, start+size) of p as float32 (padded_points, size, C), padded one-hot.

  Padding rows and samples are the one-hot vector e_0: padded samples have BC = 1 exactly
  between any two padded entries, so they add log 1 = 0; padded points are cropped at the end.
  """
  m, n, c = p.shape
  chunk = np.zeros((padded_points, size, c), np.float32)
  stop = min(start + size, n)
  chunk[:m, :stop - start] = np.asarray(p[:, start:stop], dtype=np.float32)
  chunk[m:, :, 0] = 1.0
  chunk[:m, stop - start:, 0] = 1.0
  return chunk


def bhattacharyya(p: Any, q: Any = None, *, samples_per_log: int = SAMPLES_PER_LOG) -> jax.Array:
  """Matrix of intensive Bhattacharyya distances between the points of p and those of q.

  D[i, j] = -(1/N) sum_n log clip(sum_c sqrt(p[i,n,c] q[j,n,c]), BC_CLIP, 1), with the per-sample
  coefficient clipped below at ``BC_CLIP`` = 1e-6 (and above at its bound 1). Computed in
  float32, tiled over samples and output blocks (never an (m, m', N) tensor); float16 input is
  cast to float32 chunk by chunk, and each probability row is renormalised to sum to 1.

  Example:
    >>> p = np.random.default_rng(0).dirichlet(np.ones(10), size=(5, 100))
    >>> d = analysis.bhattacharyya(p)          # (5, 5), symmetric, ~0 diagonal

  Args:
    p: (m, N, C) probabilities of m points on N samples (NumPy or JAX, any float dtype).
    q: (m', N, C) probabilities, or None for p against itself (then only the upper-triangle
      tiles are computed and mirrored).
    samples_per_log: how many samples' coefficients are multiplied before one log; at most
      SAMPLES_PER_LOG (the float32 underflow bound). Lower values exist for benchmarks.

  Returns:
    (m, m') float32 jax.Array of distances, >= 0; diagonal <= 1e-6 when q is None.

  Raises:
    ValueError: if p or q are not probabilities (rank, dtype, NaN, negative, row sums), their
      sample or class counts differ, or samples_per_log is out of range.
  """
  checks.check_probabilities(p, 'p')
  if q is not None:
    checks.check_probabilities(q, 'q')
    if tuple(q.shape[1:]) != tuple(p.shape[1:]):
      raise ValueError(f'p has shape {tuple(p.shape)} and q {tuple(q.shape)}: they must agree in '
                       'samples N and classes C, (m, N, C) and (m\', N, C).')
  if not 1 <= samples_per_log <= SAMPLES_PER_LOG:
    raise ValueError(f'samples_per_log={samples_per_log}: accepted 1..{SAMPLES_PER_LOG} (more '
                     f'factors of at least {BC_CLIP:g} can underflow float32).')
  symmetric = q is None
  m, n, c = p.shape
  m_cols = m if symmetric else q.shape[0]
  blocks = (_block_size(m), _block_size(m_cols))
  rows_padded, cols_padded = _round_up(m, blocks[0]), _round_up(m_cols, blocks[1])
  size = _chunk_size(n, rows_padded + (0 if symmetric else cols_padded), c, samples_per_log)
  acc_MxM = jnp.zeros((rows_padded, cols_padded), jnp.float32)
  for start in range(0, n, size):
    # The host prepares this chunk while the device still adds the previous one; waiting for
    # it before dispatching keeps one chunk in flight (asynchronous dispatch would otherwise
    # queue every chunk of the input at once).
    p_chunk = _padded_chunk(p, start, size, rows_padded)
    q_chunk = None if symmetric else _padded_chunk(q, start, size, cols_padded)
    acc_MxM = _accumulate_chunk(acc_MxM.block_until_ready(), p_chunk, q_chunk, blocks=blocks,
                                group=samples_per_log, symmetric=symmetric)
  return _finish(acc_MxM, n, shape=(m, m_cols), symmetric=symmetric)


@jax.jit
def _paired(p_BxNxC: jax.Array, q_BxNxC: jax.Array) -> jax.Array:
  TRACE_COUNTS['paired'] += 1
  bc_BxN = jnp.sum(sqrt_probs(p_BxNxC) * sqrt_probs(q_BxNxC), axis=-1)
  return -jnp.mean(jnp.log(jnp.clip(bc_BxN, BC_CLIP, 1.0)), axis=-1)


# Largest number of points per call of the paired distance (smaller calls are padded to a power
# of two): bounds its memory and the number of shapes it is compiled for.
_PAIRED_BATCH = 256


def padded_batches(x: Any, batch: int):
  """Yields (start, count, float32 slice of x padded along axis 0 to a power of two <= batch).

  Padding rows are uniform distributions, valid input whose results the caller drops.
  """
  total = x.shape[0]
  size = min(batch, 1 << max(0, (total - 1).bit_length()))
  for start in range(0, total, size):
    x_b = np.asarray(x[start:start + size], np.float32)
    count = x_b.shape[0]
    if count < size:
      pad = np.full((size - count,) + x_b.shape[1:], 1.0 / x_b.shape[-1], np.float32)
      x_b = np.concatenate([x_b, pad])
    yield start, count, x_b


def bhattacharyya_paired(p: Any, q: Any) -> np.ndarray:
  """Distances between matching points, d_B(p[i], q[i]), with the same clip as bhattacharyya.

  Args:
    p: (M, N, C) probabilities.
    q: (M, N, C) probabilities.

  Returns:
    (M,) float32 NumPy array.

  Raises:
    ValueError: if p or q are not probabilities or their shapes differ.
  """
  checks.check_probabilities(p, 'p')
  checks.check_probabilities(q, 'q')
  if tuple(p.shape) != tuple(q.shape):
    raise ValueError(f'p has shape {tuple(p.shape)} and q {tuple(q.shape)}: paired distances need '
                     'the same shape.')
  out_M = np.empty(p.shape[0], np.float32)
  q_batches = padded_batches(q, _PAIRED_BATCH)
  for (start, count, p_b), (_, _, q_b) in zip(padded_batches(p, _PAIRED_BATCH), q_batches):
    out_M[start:start + count] = np.asarray(_paired(p_b, q_b))[:count]
  return out_M
