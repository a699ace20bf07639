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

Numerics of the Gram matrix: each coefficient is clipped to [BC_CLIP, 1] before the product.
The lower clip bounds one sample's contribution to -log(BC_CLIP)/N (it only acts when two models
put disjoint mass on a sample, e.g. two different one-hot predictions); the upper clip removes
float rounding above the Cauchy-Schwarz bound BC <= 1, so d_B >= 0 and d_B(P, P) is ~1e-7, not
negative. A product of SAMPLES_PER_LOG clipped coefficients is at least
BC_CLIP**SAMPLES_PER_LOG = 1e-36, still a normal float32 (smallest 1.2e-38), so neither
underflow nor flush-to-zero can turn it into log(0); one more factor could. Sums run in float32
over at most a chunk of samples, then across chunks: agreement with a float64 reference is ~1e-7
absolute (tested to 1e-5 in tests/analysis/test_distances.py; 8e-8 against NumPy at m = 2,000,
N = 1,797). That is an absolute error: each coefficient is rounded by ~6e-8 near BC = 1, so
small distances lose digits (against float64, at most 1e-5 relative where D >= 1e-3, 9e-4
where D >= 1e-5, 3e-2 near D ~ 2e-7, for 40 points of N = 1,797, C = 10). The chunks do not
depend on the tiling, so any device count sums the same terms in the same order; only a tile's
matmul may round a coefficient differently in another tile shape (9e-8 between 1 and 4 devices
at m = 2,000).

Paired distances (``bhattacharyya_paired`` for matching points of two arrays,
``bhattacharyya_pairs`` for chosen pairs of one): per pair and sample, 1 - BC_n is summed from
squared differences of square roots, formed from the raw differences p - q (``_neg_log_bc``),
and -log BC_n = -log1p(-(1 - BC_n)) (-log of BC_n itself where 1 - BC_n >= GAP_SPLIT), so
nearly equal distributions (consecutive checkpoints, runs at equal progress) keep their digits:
within 3e-7 relative of float64 of the same float32 inputs for d_B from 1e-7 to 3 (tested to
1e-6 in tests/analysis/test_distances.py; float16 inputs alike), and exactly 0 between equal
rows. Before, they used the Gram kernel's products of square roots: 1.4e-1 relative off at
d_B ~ 1e-7, 1.5e-3 at 1e-5. They cost a pass over the C classes per pair and sample, in steps
of a few pairs whose rows stay in cache (PAIR_STEP_BYTES); for all pairs of many points the
Gram matmul is several times faster (8x less CPU time at 64 points, N = 1,797, C = 10).
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

# Per-sample switch between the two forms of -log BC_n in the paired distances (``_neg_log_bc``):
# below this gap 1 - BC_n, -log1p(-gap) with the gap summed from squared differences (exact for
# BC_n near 1); above it, -log BC_n from BC_n itself (exact for BC_n near 0). At 1/2 both lose
# at most a few float32 ulps.
GAP_SPLIT = 0.5

# Target size of the (K, N, C) float32 rows of one step of the paired distances' loop over
# pairs: the step's passes over its rows then stay in a core's L2 cache; steps of many times
# that size ran several times slower per pair on the 2-core CPU (their passes streamed from
# memory), and a step too small pays the loop's per-step overhead.
PAIR_STEP_BYTES = 2 * 2**20

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
      # HIGHEST: full float32 products on every backend (GPUs would default to TF32 and TPUs
      # to bfloat16 passes, ~1e-3 relative: far above the distances' 1e-7).
      bc_BxB = jnp.clip(jnp.matmul(sp_KxBxC[k], sq_KxBxC[k].T, precision=lax.Precision.HIGHEST),
                        BC_CLIP, 1.0)
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
  size = _chunk_size(n, m + (0 if symmetric else m_cols), c, samples_per_log)
  columns = lambda start: [] if symmetric else [  # noqa: E731
      _replicate(_padded_chunk(q, start, size, plan.padded_shape[1]), mesh)]
  return _distances(p, columns, plan, mesh, size, samples_per_log, (m, m_cols))


def _distances(p: Any, columns, plan: TilePlan, mesh: Mesh, size: int, samples_per_log: int,
               shape: tuple[int, int]) -> jax.Array:
  """The tiled distances of p's points to the columns' points, chunk by chunk of samples.

  Args:
    p: (m, N, C) probabilities of the row points.
    columns: start sample -> [] (p against itself) or [the columns' chunk, replicated].
    plan, mesh, size, samples_per_log: the tiling, the devices, samples per chunk and per log.
    shape: the output's shape, cropped from the plan's padded one.
  """
  acc_SxBxB = _zero_tiles(plan=plan, mesh=mesh)
  for start in range(0, p.shape[1], size):
    # The host prepares this chunk while the devices still add the previous one; waiting for
    # it before dispatching keeps one chunk in flight (asynchronous dispatch would otherwise
    # queue every chunk of the input at once).
    rows = _replicate(_padded_chunk(p, start, size, plan.padded_shape[0]), mesh)
    acc_SxBxB = _accumulate_chunk(acc_SxBxB.block_until_ready(), rows, *columns(start),
                                  plan=plan, mesh=mesh, group=samples_per_log)
  return _finish(acc_SxBxB, p.shape[1], plan=plan, mesh=mesh, shape=shape)


class DistancesTo:
  """Distances from blocks of points to fixed points (landmarks), the fixed ones kept on the
  devices: ``DistancesTo(q, block)(p)`` is ``bhattacharyya(p, q)`` for any p of at most
  ``block`` points, without padding and sending q's chunks to the devices at every call.

  Every call runs one tiling and one compiled program: p is padded to ``block`` rows (padding
  rows add log 1 = 0 and are cropped), so the last, smaller block of a sweep compiles nothing
  new. Device memory: q's L x N x C float32 on every device, on top of ``bhattacharyya``'s.
  """

  def __init__(self, q: Any, block: int, *, samples_per_log: int = SAMPLES_PER_LOG,
               devices: Sequence[jax.Device] | None = None):
    checks.check_probabilities(q, 'q')
    devices = jax.devices() if devices is None else list(devices)
    if block < 1 or not devices:
      raise ValueError(f'block={block}, {len(devices)} devices: need block >= 1 and a device.')
    self._mesh = Mesh(np.asarray(devices), (TILE_AXIS,))
    m_cols, n, c = q.shape
    self._block, self._m_cols, self._shape = block, m_cols, (n, c)
    self._plan = plan_tiles(block, m_cols, False, len(devices))
    self._samples_per_log = samples_per_log
    self._size = _chunk_size(n, block + m_cols, c, samples_per_log)
    self._chunks = {start: _replicate(_padded_chunk(q, start, self._size,
                                                    self._plan.padded_shape[1]), self._mesh)
                    for start in range(0, n, self._size)}

  def __call__(self, p: Any) -> jax.Array:
    """(m, L) float32 distances from p's m <= block points to q's, replicated."""
    checks.check_probabilities(p, 'p')
    if tuple(p.shape[1:]) != self._shape or p.shape[0] > self._block:
      raise ValueError(f'p has shape {tuple(p.shape)}: expected at most {self._block} points '
                       f'on (N, C) = {self._shape}.')
    d_BxL = _distances(p, lambda start: [self._chunks[start]], self._plan, self._mesh,
                       self._size, self._samples_per_log, (self._block, self._m_cols))
    return d_BxL if p.shape[0] == self._block else d_BxL[:p.shape[0]]


def _neg_log_bc(p_KxNxC: jax.Array, q_KxNxC: jax.Array) -> jax.Array:
  """Per-sample -log clip(BC_n, BC_CLIP, 1) of matching rows, exact also when BC_n is near 1.

  With P, Q the rows renormalised to sum 1, 1 - BC_n = 1/2 sum_c (sqrt P_c - sqrt Q_c)^2, a sum
  of non-negative terms, and sqrt P_c - sqrt Q_c = (P_c - Q_c) / (sqrt P_c + sqrt Q_c) (0 where
  both are 0). P_c - Q_c is formed as (p_c - q_c) / s_p + q_c (1/s_p - 1/s_q) from the raw
  inputs (s: row sums): p_c - q_c is exact in float32 where p_c and q_c are within 2x
  (Sterbenz), whereas renormalising p and q first would round each entry by ~6e-8 relative,
  more than P_c - Q_c itself when d_B ~ 1e-7. The rounding of 1/s_p and 1/s_q adds to
  P_c - Q_c the same multiple of Q_c for every c, which moves 1 - BC_n only by that multiple
  times itself (sum_c (P_c - Q_c) = 0 cancels the first-order term). Where
  1 - BC_n < GAP_SPLIT the term is -log1p(-(1 - BC_n)); above it, -log of BC_n =
  sum_c sqrt(P_c Q_c) itself, clipped at BC_CLIP: each form keeps its digits where the other
  loses them (log1p's argument near -1, log's near 1).

  Args:
    p_KxNxC: probabilities of K points (any float dtype; rows sum to 1 up to their rounding).
    q_KxNxC: probabilities of the K points they are paired with.

  Returns:
    (K, N) float32 per-sample contributions, >= 0, exactly 0 where the rows are equal.
  """
  # Classes second, samples last: the sums over C then add whole rows of N samples (vectorised)
  # instead of reducing runs of C = 10 numbers.
  p_KxCxN = jnp.swapaxes(p_KxNxC.astype(jnp.float32), 1, 2)
  q_KxCxN = jnp.swapaxes(q_KxNxC.astype(jnp.float32), 1, 2)
  inv_sum_p_Kx1xN = 1.0 / jnp.sum(p_KxCxN, axis=1, keepdims=True)
  inv_sum_q_Kx1xN = 1.0 / jnp.sum(q_KxCxN, axis=1, keepdims=True)
  sqrt_p_KxCxN = jnp.sqrt(p_KxCxN * inv_sum_p_Kx1xN)
  sqrt_q_KxCxN = jnp.sqrt(q_KxCxN * inv_sum_q_Kx1xN)
  norm_diff_KxCxN = ((p_KxCxN - q_KxCxN) * inv_sum_p_Kx1xN
                     + q_KxCxN * (inv_sum_p_Kx1xN - inv_sum_q_Kx1xN))
  # + tiny: 0 / tiny = 0 where both entries are 0; any non-zero sum of square roots of float32
  # numbers is ~1e-23 or more, which adding tiny leaves unchanged.
  sqrt_diff_KxCxN = norm_diff_KxCxN / (sqrt_p_KxCxN + sqrt_q_KxCxN + np.finfo(np.float32).tiny)
  gap_KxN = 0.5 * jnp.sum(sqrt_diff_KxCxN**2, axis=1)
  bc_KxN = jnp.sum(sqrt_p_KxCxN * sqrt_q_KxCxN, axis=1)
  # Both branches are evaluated; the minimum keeps log1p's argument above -1 where it is not
  # used (rounding can push 1 - BC_n past 1 when BC_n ~ 0).
  near_KxN = -jnp.log1p(-jnp.minimum(gap_KxN, GAP_SPLIT))
  far_KxN = -jnp.log(jnp.clip(bc_KxN, BC_CLIP, 1.0))
  return jnp.where(gap_KxN < GAP_SPLIT, near_KxN, far_KxN)


def _pairs_per_step(num_pairs: int, num_samples: int, num_classes: int) -> int:
  """Pairs per step: the largest power of two whose (K, N, C) float32 rows fit in
  PAIR_STEP_BYTES (at least 1), at most num_pairs (a power of two, so K divides it)."""
  fits = max(1, PAIR_STEP_BYTES // (4 * num_classes * num_samples))
  return min(num_pairs, 1 << (fits.bit_length() - 1))


def _steps(x_BxNxC: jax.Array) -> jax.Array:
  """x as (B / K, K, N, C): the steps of the loop over pairs (B a multiple of K)."""
  b, n, c = x_BxNxC.shape
  return x_BxNxC.reshape(-1, _pairs_per_step(b, n, c), n, c)


@jax.jit
def _paired(p_BxNxC: jax.Array, q_BxNxC: jax.Array) -> jax.Array:
  TRACE_COUNTS['paired'] += 1
  pairs = (_steps(p_BxNxC), _steps(q_BxNxC))
  return lax.map(lambda pq: jnp.mean(_neg_log_bc(*pq), axis=-1), pairs).reshape(-1)


@jax.jit
def _indexed_pairs(p_MxNxC: jax.Array, rows_B: jax.Array, cols_B: jax.Array) -> jax.Array:
  TRACE_COUNTS['indexed_pairs'] += 1
  _, n, c = p_MxNxC.shape
  k = _pairs_per_step(rows_B.shape[0], n, c)

  def step(index):
    rows_K, cols_K = index
    return jnp.mean(_neg_log_bc(p_MxNxC[rows_K], p_MxNxC[cols_K]), axis=-1)

  return lax.map(step, (rows_B.reshape(-1, k), cols_B.reshape(-1, k))).reshape(-1)


# Largest number of points (or index pairs) per call of the paired distances (smaller calls are
# padded to a power of two): bounds their memory and the number of shapes they are compiled for.
_PAIRED_BATCH = 256


def _pow2_batch(total: int, batch: int) -> int:
  """The batch size for ``total`` items: the power of two covering them, at most ``batch``."""
  return min(batch, 1 << max(0, (total - 1).bit_length()))


def padded_batches(x: Any, batch: int):
  """Yields (start, count, float32 slice of x padded along axis 0 to a power of two <= batch).

  Padding rows are uniform distributions, valid input whose results the caller drops.
  """
  total = x.shape[0]
  size = _pow2_batch(total, batch)
  for start in range(0, total, size):
    x_b = np.asarray(x[start:start + size], np.float32)
    count = x_b.shape[0]
    if count < size:
      pad = np.full((size - count,) + x_b.shape[1:], 1.0 / x_b.shape[-1], np.float32)
      x_b = np.concatenate([x_b, pad])
    yield start, count, x_b


def bhattacharyya_paired(p: Any, q: Any) -> np.ndarray:
  """Distances between matching points, d_B(p[i], q[i]), with the same clip as bhattacharyya.

  Computed per sample from the squared differences of square-root probabilities
  (``_neg_log_bc``), so small distances, such as those of consecutive checkpoints, keep their
  digits: within 1e-6 relative of float64 of the same inputs for d_B >= 1e-7 (module
  docstring).

  Args:
    p: (M, N, C) probabilities (any float dtype).
    q: (M, N, C) probabilities.

  Returns:
    (M,) float32 NumPy array; exactly 0 where p[i] equals q[i].

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


def bhattacharyya_pairs(p: Any, rows: Any, cols: Any, *, max_pairs: int | None = None
                        ) -> np.ndarray:
  """Distances d_B(p[rows[k]], p[cols[k]]) between chosen pairs of points of one array.

  As accurate as ``bhattacharyya_paired`` (the same per-sample form, see the module docstring),
  without gathering the pairs on the host: p is copied to the device once and each batch of
  pairs is gathered there. Use it instead of the Gram ``bhattacharyya`` where small distances
  matter; the Gram matmul is faster for all pairs of many points.

  Example:
    >>> p = np.random.default_rng(0).dirichlet(np.ones(10), size=(4, 100))
    >>> rows, cols = np.triu_indices(4, k=1)
    >>> d = distances.bhattacharyya_pairs(p, rows, cols)   # (6,), d_B(p[0], p[1]), ...

  Args:
    p: (M, N, C) probabilities.
    rows: (K,) int indices into p.
    cols: (K,) int indices into p.
    max_pairs: the most pairs the caller evaluates on arrays of this shape (default K); it
      sets the batch size, so that calls with fewer pairs compile no other shape.

  Returns:
    (K,) float32 NumPy array.

  Raises:
    ValueError: if p are not probabilities, or rows and cols differ in shape or leave [0, M).
  """
  checks.check_probabilities(p, 'p')
  rows_K, cols_K = np.asarray(rows), np.asarray(cols)
  if (rows_K.ndim != 1 or rows_K.shape != cols_K.shape
      or not {rows_K.dtype.kind, cols_K.dtype.kind} <= set('iu')):
    raise ValueError(f'rows {rows_K.shape} {rows_K.dtype.name} and cols {cols_K.shape} '
                     f'{cols_K.dtype.name}: expected two (K,) integer arrays of the same K.')
  m = p.shape[0]
  bad_K = (rows_K < 0) | (rows_K >= m) | (cols_K < 0) | (cols_K >= m)
  if bad_K.any():
    k = int(np.argmax(bad_K))
    raise ValueError(f'pair {k} is ({rows_K[k]}, {cols_K[k]}): rows and cols must index the {m} '
                     f'points of p, in [0, {m}).')
  total = len(rows_K)
  out_K = np.empty(total, np.float32)
  if not total:
    return out_K
  size = _pow2_batch(max(total, max_pairs or 0), _PAIRED_BATCH)
  # Pairs (0, 0) pad the last batch: distance 0, dropped.
  pairs_2xK = np.zeros((2, _round_up(total, size)), np.int32)
  pairs_2xK[:, :total] = rows_K, cols_K
  p_MxNxC = jnp.asarray(np.asarray(p, np.float32))
  for start in range(0, total, size):
    rows_B, cols_B = pairs_2xK[:, start:start + size]
    count = min(size, total - start)
    out_K[start:start + count] = np.asarray(_indexed_pairs(p_MxNxC, rows_B, cols_B))[:count]
  return out_K
