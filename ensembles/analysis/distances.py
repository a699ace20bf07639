"""Intensive Bhattacharyya distances between models given by their predicted probabilities.

    d_B(P, Q) = -(1/N) sum_n log BC_n,    BC_n = sum_c sqrt(P[n, c] Q[n, c])

For m points the coefficients of one sample form the Gram matrix S_n S_n^T with
S_n = sqrt(P[:, n, :]) (m x C), so the distance matrix is a sum over samples of the log of
small matmuls. How it is computed here, and why (measurements in benchmarks/gram.py):

* Samples stream from the input in chunks (a few MiB each), so neither a transposed copy of the
  input nor an (m, m', N) tensor ever exists: memory is the (m, m') accumulator plus one chunk.
* Within a chunk, the output is cut into (block x block) tiles; ``_tile_log_bc_sum`` computes
  one tile. With ``q=None`` only tiles on or above the diagonal are computed and the result is
  mirrored.
* Several devices (``jax.devices()``, every process's): the tiles are dealt round-robin to the
  devices of a 1-D mesh (``TilePlan``; the grid is refined until the devices' shares are even),
  every device gets each chunk whole and adds its own tiles' sums under ``jax.shard_map``, and
  at the end the tiles are gathered into one D replicated on every device (and so on every
  process). One device gets the fewest tiles of side <= MAX_BLOCK, the fastest single-device
  tiling. Memory per device: its tile sums (m m' / devices, about half that when symmetric), one
  chunk, and at the end the gathered tiles and D.
* Each sample's coefficients come from one 2-D (block x C) @ (C x block) matmul (XLA's batched
  matmul with K = C = 10 was far slower), and the log - a large share of the time when it runs
  once per (pair, sample) - runs once per ``SAMPLES_PER_LOG`` samples, on the product of their
  clipped coefficients (log(a b) = log a + log b). Measurements: benchmarks/README.md.

Numerics: each coefficient is clipped to [BC_CLIP, 1] before the product. The lower clip bounds
one sample's contribution to -log(BC_CLIP)/N (it only acts when two models put disjoint mass on
a sample, e.g. two different one-hot predictions); the upper clip removes float rounding above
the Cauchy-Schwarz bound BC <= 1, so d_B >= 0 and d_B(P, P) is ~1e-7, not negative. A product
of SAMPLES_PER_LOG clipped coefficients is at least BC_CLIP**SAMPLES_PER_LOG = 1e-36, still a
normal float32 (smallest 1.2e-38), so neither underflow nor flush-to-zero can turn it into
log(0); one more factor could. Sums run in float32 over at most a chunk of samples, then
across chunks: agreement with a float64 reference is ~1e-7 (tested to 1e-5 in
tests/analysis/test_distances.py; 8e-8 against NumPy at m = 2,000, N = 1,797). The chunks do not
depend on the tiling, so any device count sums the same terms in the same order; only a tile's
matmul may round a coefficient differently in another tile shape (9e-8 between 1 and 4 devices
at m = 2,000).
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ensembles.analysis import checks

# Lower clip of each per-sample Bhattacharyya coefficient (the authors used 1e-6 or 1e-9). With
# 1e-6 a sample contributes at most -log(1e-6) = 13.8 nats / N to a distance.
BC_CLIP = 1e-6

# Samples whose clipped coefficients are multiplied before one log: the largest k with
# BC_CLIP**k above the smallest normal float32, so the product can neither underflow nor be
# flushed to zero (6 for BC_CLIP = 1e-6).
SAMPLES_PER_LOG = int(math.log(np.finfo(np.float32).tiny) / math.log(BC_CLIP))

# Largest side of an output tile: smaller tiles pay more per-call overhead, larger ones stop
# fitting the L2 cache (tile sizes timed in benchmarks/README.md, gram.py's design notes).
MAX_BLOCK = 512

# Several devices: the tile grid is refined (smaller tiles, more of them) until the busiest
# device's share, ceil(T / devices) tiles, is within this fraction of the even split T / devices
# (or tiles would get smaller than MAX_BLOCK / MIN_BLOCK_DIVISOR; then the best balance seen).
MIN_BALANCE = 0.9
MIN_BLOCK_DIVISOR = 4

# Target size of one chunk of samples for all points of p (and q), as float32. The chunk is
# read, converted and padded on the host, then copied to every device and transposed there: a
# few copies of it per device are the working memory on top of the (m, m') accumulator.
CHUNK_BYTES = 8 * 2**20

# Name of the mesh axis over which the tiles are spread.
TILE_AXIS = 'tiles'

# Number of times each jitted function was traced, by name: tests use it to check that calls of
# the same shapes do not recompile.
TRACE_COUNTS: collections.Counter[str] = collections.Counter()


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def _block_size(num_points: int, num_blocks: int) -> int:
  """Tile side for ``num_blocks`` blocks: equal blocks, so the last one is not mostly padding."""
  return -(-num_points // num_blocks)


def _chunk_size(num_samples: int, num_points: int, num_classes: int, group: int) -> int:
  """Samples per chunk: a multiple of ``group``, near CHUNK_BYTES, chunks of equal size.

  It depends on the point count, not on the tiling, so every device count and tile shape sums
  the same samples in the same order.
  """
  bytes_per_sample = 4 * num_points * num_classes
  largest = max(group, CHUNK_BYTES // bytes_per_sample // group * group)
  num_chunks = -(-num_samples // largest)
  return _round_up(-(-num_samples // num_chunks), group)


class TilePlan(NamedTuple):
  """How the output is cut into tiles and the tiles dealt to devices (hashable: static).

  Tile t covers rows [i B, (i+1) B) and columns [j B', (j+1) B') for the t-th (i, j) of the grid
  in row-major order (only i <= j when symmetric). Tiles are dealt round-robin: device k
  computes tiles k, k + devices, ..., so the devices' tile counts differ by at most one; a
  device with fewer fills its last slot with tile 0 again and that sum is dropped.
  """

  blocks: tuple[int, int]  # (B, B'): tile shape.
  grid: tuple[int, int]    # Blocks along rows and columns.
  symmetric: bool          # Only tiles on or above the diagonal (i <= j).
  num_devices: int

  @property
  def num_tiles(self) -> int:
    rows, cols = self.grid
    return rows * (rows + 1) // 2 if self.symmetric else rows * cols

  @property
  def tiles_per_device(self) -> int:
    return -(-self.num_tiles // self.num_devices)

  @property
  def balance(self) -> float:
    """Even split over the busiest device's share: 1 when every device has as many tiles."""
    return self.num_tiles / (self.num_devices * self.tiles_per_device)

  @property
  def padded_shape(self) -> tuple[int, int]:
    return self.grid[0] * self.blocks[0], self.grid[1] * self.blocks[1]

  def tiles(self) -> np.ndarray:
    """(T, 2) block coordinates (i, j) of the tiles to compute, tile t in row t."""
    rows, cols = self.grid
    return np.array([(i, j) for i in range(rows) for j in range(cols)
                     if not self.symmetric or i <= j], np.int32).reshape(-1, 2)

  def slot(self, tile: np.ndarray) -> np.ndarray:
    """Index of each tile's slot in the (devices * T_d) stack of tile sums, device by device."""
    return tile % self.num_devices * self.tiles_per_device + tile // self.num_devices

  def slot_tiles(self) -> np.ndarray:
    """(devices, T_d, 2) block coordinates computed in each slot (tile 0 in unused slots)."""
    coords_Sx2 = np.repeat(self.tiles()[:1], self.num_devices * self.tiles_per_device, axis=0)
    coords_Sx2[self.slot(np.arange(self.num_tiles))] = self.tiles()
    return coords_Sx2.reshape(self.num_devices, self.tiles_per_device, 2)

  def slot_grid(self) -> np.ndarray:
    """(rows, cols) slot of the tile holding each block; below the diagonal, its mirror's."""
    rows, cols = self.grid
    index = {ij: t for t, ij in enumerate(map(tuple, self.tiles().tolist()))}
    tile_RxC = np.array([[index[(min(i, j), max(i, j)) if self.symmetric else (i, j)]
                          for j in range(cols)] for i in range(rows)])
    return self.slot(tile_RxC).astype(np.int32)


def plan_tiles(m: int, m_cols: int, symmetric: bool, num_devices: int) -> TilePlan:
  """The tiling of an (m, m_cols) output over ``num_devices`` devices.

  One device: the fewest tiles of side <= MAX_BLOCK (the fastest tiling). Several: that grid,
  refined one block at a time (both sides when symmetric, else the longer side) until the
  balance reaches MIN_BALANCE; the best balance seen if tiles would get too small first.
  """
  min_block = max(1, MAX_BLOCK // MIN_BLOCK_DIVISOR)
  refine_rows = symmetric or m >= m_cols
  refine_cols = symmetric or m < m_cols
  rows, cols = -(-m // MAX_BLOCK), -(-m_cols // MAX_BLOCK)
  best = None
  while True:
    blocks = (_block_size(m, rows), _block_size(m_cols, cols))
    grid = (-(-m // blocks[0]), -(-m_cols // blocks[1]))
    plan = TilePlan(blocks, grid, symmetric, num_devices)
    if best is None or plan.balance > best.balance:
      best = plan
    rows, cols = rows + refine_rows, cols + refine_cols
    too_small = ((refine_rows and _block_size(m, rows) < min_block)
                 or (refine_cols and _block_size(m_cols, cols) < min_block))
    if best.balance >= MIN_BALANCE or too_small:
      return best


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


@functools.partial(jax.jit, static_argnames=('plan', 'mesh'))
def _zero_tiles(*, plan: TilePlan, mesh: Mesh) -> jax.Array:
  """The (devices * T_d, B, B') accumulator of the tile sums, zero, sharded over devices."""
  TRACE_COUNTS['zero_tiles'] += 1
  zeros_SxBxB = jnp.zeros((plan.num_devices * plan.tiles_per_device, *plan.blocks), jnp.float32)
  return lax.with_sharding_constraint(zeros_SxBxB, NamedSharding(mesh, PartitionSpec(TILE_AXIS)))


@functools.partial(jax.jit, static_argnames=('plan', 'mesh', 'group'), donate_argnums=0)
def _accumulate_chunk(acc_SxBxB: jax.Array, *chunks: jax.Array, plan: TilePlan, mesh: Mesh,
                      group: int) -> jax.Array:
  """Adds one chunk of samples' sums of log coefficients to every device's own tiles.

  Args:
    acc_SxBxB: (devices * T_d, B, B') running sums of the tile slots, sharded (donated).
    *chunks: (rows, n, C) probabilities of the row points on n samples, n a multiple of group,
      replicated on every device; then, unless plan.symmetric, (cols, n, C) for the columns.
    plan: the tiling.
    mesh: 1-D mesh of the devices, axis TILE_AXIS.
    group: samples per log.
  """
  TRACE_COUNTS['accumulate_chunk'] += 1
  block_rows, block_cols = plan.blocks
  origins_DxTx2 = jnp.asarray(plan.slot_tiles() * np.array(plan.blocks, np.int32))

  def add_own_tiles(acc_TxBxB, p_chunk, q_chunk=None):
    sp_GxKxMxC = _sqrt_groups(p_chunk, group)
    sq_GxKxMxC = sp_GxKxMxC if q_chunk is None else _sqrt_groups(q_chunk, group)
    origins_Tx2 = origins_DxTx2[lax.axis_index(TILE_AXIS)]

    def add_tile(t, acc):
      row, col = origins_Tx2[t, 0], origins_Tx2[t, 1]
      tile_BxB = _tile_log_bc_sum(lax.dynamic_slice_in_dim(sp_GxKxMxC, row, block_rows, axis=2),
                                  lax.dynamic_slice_in_dim(sq_GxKxMxC, col, block_cols, axis=2))
      return lax.dynamic_update_index_in_dim(acc, acc[t] + tile_BxB, t, axis=0)

    return lax.fori_loop(0, acc_TxBxB.shape[0], add_tile, acc_TxBxB)

  # No collectives inside: each device's tiles depend on its axis index alone, so the varying-
  # across-devices type checks (which would ask for pcasts of the tile loops' zero carries) are
  # off.
  replicated = (PartitionSpec(),) * len(chunks)
  return jax.shard_map(add_own_tiles, mesh=mesh, in_specs=(PartitionSpec(TILE_AXIS), *replicated),
                       out_specs=PartitionSpec(TILE_AXIS), check_vma=False)(acc_SxBxB, *chunks)


@functools.partial(jax.jit, static_argnames=('plan', 'mesh', 'shape'))
def _finish(acc_SxBxB: jax.Array, num_samples: int, *, plan: TilePlan, mesh: Mesh,
            shape: tuple[int, int]) -> jax.Array:
  """Distances from the tile sums: gather the tiles, mirror, scale, crop; replicated.

  The tiles are gathered onto every device (the output is replicated over the mesh, on every
  process). The upper triangle (i <= j) lies in computed tiles; mirroring it element by element
  makes the result exactly symmetric, also inside diagonal tiles.
  """
  TRACE_COUNTS['finish'] += 1
  rows, cols = plan.grid
  acc_SxBxB = lax.with_sharding_constraint(acc_SxBxB, NamedSharding(mesh, PartitionSpec()))
  tiles_RxCxBxB = acc_SxBxB[jnp.asarray(plan.slot_grid())]
  acc_MxM = tiles_RxCxBxB.transpose(0, 2, 1, 3).reshape(plan.padded_shape)
  if plan.symmetric:
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


def _replicate(x: np.ndarray, mesh: Mesh) -> jax.Array:
  """A host array, the same on every process, as a global array replicated over the mesh."""
  return jax.make_array_from_callback(x.shape, NamedSharding(mesh, PartitionSpec()),
                                      lambda index: x[index])


def bhattacharyya(p: Any, q: Any = None, *, samples_per_log: int = SAMPLES_PER_LOG,
                  devices: Sequence[jax.Device] | None = None) -> jax.Array:
  """Matrix of intensive Bhattacharyya distances between the points of p and those of q.

  D[i, j] = -(1/N) sum_n log clip(sum_c sqrt(p[i,n,c] q[j,n,c]), BC_CLIP, 1), with the per-sample
  coefficient clipped below at ``BC_CLIP`` = 1e-6 (and above at its bound 1). Computed in
  float32, tiled over samples and output blocks (never an (m, m', N) tensor); float16 input is
  cast to float32 chunk by chunk, and each probability row is renormalised to sum to 1.

  The tiles are spread evenly over ``devices`` (default ``jax.devices()``: every device of every
  process); each device adds its own tiles' sums, and at the end they are gathered into one D,
  replicated on every device. On several processes (``jax.distributed``) every process must
  make the same call with the same p and q (as ``load_trajectories`` gives each of them), and
  every process gets the whole D (``np.asarray(D)`` works on each).

  Example:
    >>> p = np.random.default_rng(0).dirichlet(np.ones(10), size=(5, 100))
    >>> d = analysis.bhattacharyya(p)          # (5, 5), symmetric, ~0 diagonal

  Args:
    p: (m, N, C) probabilities of m points on N samples (NumPy or JAX, any float dtype).
    q: (m', N, C) probabilities, or None for p against itself (then only the upper-triangle
      tiles are computed and mirrored).
    samples_per_log: how many samples' coefficients are multiplied before one log; at most
      SAMPLES_PER_LOG (the float32 underflow bound). Lower values exist for benchmarks.
    devices: the devices to spread the tiles over (default: all of them, on every process).
      On several processes, either devices of every process (and every process calls) or
      devices of this process alone (a local computation).

  Returns:
    (m, m') float32 jax.Array of distances, >= 0, fully replicated over the devices; diagonal
    <= 1e-6 when q is None.

  Raises:
    ValueError: if p or q are not probabilities (rank, dtype, NaN, negative, row sums), their
      sample or class counts differ, samples_per_log is out of range or devices is empty.
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
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError('devices=[]: give at least one device (or None for jax.devices()).')
  mesh = Mesh(np.asarray(devices), (TILE_AXIS,))
  symmetric = q is None
  m, n, c = p.shape
  m_cols = m if symmetric else q.shape[0]
  plan = plan_tiles(m, m_cols, symmetric, len(devices))
  rows_padded, cols_padded = plan.padded_shape
  size = _chunk_size(n, m + (0 if symmetric else m_cols), c, samples_per_log)
  acc_SxBxB = _zero_tiles(plan=plan, mesh=mesh)
  for start in range(0, n, size):
    # The host prepares this chunk while the devices still add the previous one; waiting for
    # it before dispatching keeps one chunk in flight (asynchronous dispatch would otherwise
    # queue every chunk of the input at once).
    chunks = [_padded_chunk(p, start, size, rows_padded)]
    if not symmetric:
      chunks.append(_padded_chunk(q, start, size, cols_padded))
    chunks = [_replicate(chunk, mesh) for chunk in chunks]
    acc_SxBxB = _accumulate_chunk(acc_SxBxB.block_until_ready(), *chunks, plan=plan, mesh=mesh,
                                  group=samples_per_log)
  return _finish(acc_SxBxB, n, plan=plan, mesh=mesh, shape=(m, m_cols))


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
