"""The map of a whole sweep: every (member, recording time) placed by landmark InPCA.

``embed_trajectories(traj)`` fits InPCA on L landmarks (``landmarks.choose_landmarks``) and
places every recorded point of every member that did not diverge, block by block from the
store's block reader: a block's (block x L) distances to the landmarks are the tiled Gram kernel
(``distances.DistancesTo``: the landmarks stay on this process's devices, the tiles are spread
over them) and its coordinates the out-of-sample formula, computed where the distances are.
Host memory is O(L^2 + L N C + block L + block N C), whatever the number of points; each
device holds the landmarks' L N C probabilities.

With ``outdir`` the map is written as it is made, and a killed run resumes::

    OUTDIR/map.json              settings, the store's state, and at the end what was left out
    OUTDIR/fit.npz               the landmark fit (indices, eigenpairs, centring, references)
    OUTDIR/points/part-<b>.parquet   one file per block: per point its member, recording time,
                                 epoch, step, status, metrics, progress, hparams (``hp_*``),
                                 coordinates ``x1..xk`` (NaN where left out, with the reason)

Parquet is read without this package (``pandas.read_parquet(OUTDIR + '/points')``). Each
part is written under a temporary name, then renamed: a rerun skips the parts that exist and
reuses the saved fit, so it gives the coordinates an uninterrupted run gives. Under
``jax.distributed`` every process computes the landmark fit (the Gram over all devices) and
then takes every P-th block, on its own devices.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from jax.experimental import multihost_utils

from ensembles.analysis import distances
from ensembles.analysis import embedding as embedding_lib
from ensembles.analysis import geometry
from ensembles.analysis import landmarks as landmarks_lib
from ensembles.store import reader as store_reader
from ensembles.store.format import METRICS, STATUS_DIVERGED

if TYPE_CHECKING:
  from ensembles.store import TrajectoryStore

# InPCA components kept.
DEFAULT_COMPONENTS = 10

# Landmarks when none are asked for and the points are more than LANDMARK_THRESHOLD: the
# fewest measured on three real stores with which the map's explained stress matched the full
# InPCA's and no near-equal eigenvalues swapped, a flat spectrum (MNIST-1D) included; half as
# many sufficed only where the first axis dominates (docs/LANDMARKS.md).
DEFAULT_LANDMARKS = 4000

# Up to this many points the map is a full InPCA (every point a landmark): exact, and still
# cheap in time and memory, since landmarks would be at least half of the points and save
# little; above it the full map's m^2 Gram (computed for the fit and again to place every
# point) and memory outgrow the landmark map's linear cost (docs/LANDMARKS.md).
LANDMARK_THRESHOLD = 8000

# A block's (block x L) distances are at most this many float32 entries (64 MiB), and a block
# holds at most MAX_BLOCK_POINTS points (its probabilities: block x N x C).
BLOCK_DISTANCE_ENTRIES = 2**24
MAX_BLOCK_POINTS = 4096

# Version of the files under OUTDIR; map.json records it.
MAP_FORMAT = 1
MAP_FILE, FIT_FILE, POINTS_DIR = 'map.json', 'fit.npz', 'points'

# Why a point has no coordinates (the ``left_out`` column; '' when placed).
DIVERGED, NOT_RECORDED = 'member diverged', 'not recorded'

# The left_out column's values, by code.
_REASONS = ('', NOT_RECORDED, DIVERGED)

# Points along the ignorance -> truth geodesic placed in the map.
GEODESIC_POINTS = 21


class TrajectoryEmbedding(NamedTuple):
  """A map of every point of a sweep.

  Attributes:
    coords: (E * T, k) float32 coordinates, member-major (point e * T + t); NaN where a point
      was left out (see ``left_out``).
    eigenvalues: (k,) eigenvalues of the landmark fit, by |lam| descending, signs kept.
    explained_stress: (k,) ES_1..ES_k of the landmark fit.
    landmarks: (L,) flat indices of the landmark points.
    placed: (E * T,) bool, the points with coordinates.
    left_out: reason -> number of points without coordinates.
    fit: the landmark ``InPCA`` (its ``project`` places any other point).
    geodesic: (GEODESIC_POINTS, k) the ignorance -> truth geodesic placed in the map.
    num_times: T.
    split: the probes mapped.
  """
  coords: np.ndarray
  eigenvalues: np.ndarray
  explained_stress: np.ndarray
  landmarks: np.ndarray
  placed: np.ndarray
  left_out: dict[str, int]
  fit: embedding_lib.InPCA
  geodesic: np.ndarray
  num_times: int
  split: str

  def lines(self) -> list[str]:
    """What was mapped, as printable lines."""
    es = ', '.join(f'ES_{a + 1}={v:.4f}' for a, v in enumerate(self.explained_stress[:5]))
    out = [f'Mapped {int(self.placed.sum())} of {len(self.placed)} points ({self.split} '
           f'probes) on {len(self.landmarks)} landmarks: {es}']
    out += [f'Left out {n} points: {why}.' for why, n in self.left_out.items() if n]
    return out


@jax.jit
def _place(d_BxL: jax.Array, column_means_L: jax.Array, grand_mean: jax.Array,
           basis_LxK: jax.Array) -> jax.Array:
  """Out-of-sample InPCA coordinates of a block from its distances to the landmarks."""
  distances.TRACE_COUNTS['place'] += 1
  w_BxL = -0.5 * (d_BxL - d_BxL.mean(axis=1, keepdims=True) - column_means_L + grand_mean)
  return jnp.matmul(w_BxL, basis_LxK, precision=jax.lax.Precision.HIGHEST)


def _basis(fit: embedding_lib.InPCA) -> np.ndarray:
  """(L, k) U / (sign(lam) sqrt|lam|), zero on null axes: coordinates = W_new @ basis."""
  scale_K = fit.signs * np.sqrt(np.abs(fit.eigenvalues))
  null_K = embedding_lib._null(fit.eigenvalues)  # pylint: disable=protected-access
  return np.where(null_K, 0.0, fit.eigenvectors / np.where(null_K, 1.0, scale_K))


class _Arrays:
  """The block reader over a store that only has ``probs(split)`` (an in-memory one)."""

  def __init__(self, traj: TrajectoryStore, split: str):
    self._probs = np.asarray(traj.probs(split))
    self.recorded = np.isfinite(self._probs).all(axis=(2, 3))

  def block_plan(self, max_points: int) -> list[store_reader.BlockSpec]:
    """The store's plan, all members taken as one cohort."""
    everyone = {0: np.arange(self.recorded.shape[0])}
    return store_reader.block_plan(everyone, self.recorded.shape[1], max_points)

  def read_points(self, split: str, members: np.ndarray, times: np.ndarray) -> np.ndarray:
    del split
    return self._probs[members, times].astype(np.float32)


def _reader(traj, split: str):
  """The store itself where it reads blocks of points, else an in-memory stand-in."""
  return traj if hasattr(traj, 'block_plan') else _Arrays(traj, split)


def _plan(reader, block_points: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """(members, times) of each block of at most ``block_points`` points."""
  return [(s.members, s.times) for s in reader.block_plan(block_points)]


def _hparam_columns(members: list[dict[str, Any]]) -> dict[str, tuple[pa.DataType, list[Any]]]:
  """One column per hparams key, typed from every member's value (so every part agrees)."""
  columns = {}
  for key in sorted({k for hp in members for k in hp}):
    values = [hp.get(key) for hp in members]
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
      kind = pa.bool_()
    elif present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
      kind = pa.int64()
    elif present and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                         for v in present):
      kind, values = pa.float64(), [None if v is None else float(v) for v in values]
    else:
      kind = pa.string()
      values = [None if v is None else v if isinstance(v, str) else json.dumps(v)
                for v in values]
    columns[f'hp_{key}'] = (kind, values)
  return columns


class _Share:
  """The processes that make a map together, and this one's devices and blocks."""

  def __init__(self, processes: list[int], devices: list[jax.Device]):
    self._processes = processes
    here = jax.process_index()
    self.mine = [d for d in devices if d.process_index == here]

  def blocks(self, num_blocks: int) -> list[int]:
    """This process's blocks: every P-th one."""
    rank, count = self._processes.index(jax.process_index()), len(self._processes)
    return [b for b in range(num_blocks) if b % count == rank]

  def wait(self, name: str) -> None:
    """Waits for every process of the map (a no-op on one)."""
    if len(self._processes) > 1:
      multihost_utils.sync_global_devices(f'ensembles-map-{name}')


class _MapDir:
  """The files of a map under ``outdir``: settings check, lock, fit, parts."""

  def __init__(self, outdir: str, settings: dict[str, Any], overwrite: bool):
    self.outdir = outdir
    self.settings = settings
    self._overwrite = overwrite

  def path(self, *names: str) -> str:
    return os.path.join(self.outdir, *names)

  @contextlib.contextmanager
  def hold(self) -> Iterator[None]:
    """Holds an exclusive lock on ``outdir`` (the directory itself) while the map is made."""
    os.makedirs(self.outdir, exist_ok=True)
    held = os.open(self.outdir, os.O_RDONLY)
    try:
      try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        raise ValueError(f'{self.outdir!r} is in use by another analysis (it holds the '
                         "directory's lock): wait for it to end, or map into another "
                         'directory.') from None
      yield
    finally:
      os.close(held)

  def settle(self) -> None:
    """Checks the map already there against this run's settings (resumable if they agree).

    Raises:
      ValueError: a map made with other settings or from another state of the store (and not
        ``overwrite``).
    """
    if not os.path.exists(self.path(MAP_FILE)):
      if os.path.isdir(self.path(POINTS_DIR)) and os.listdir(self.path(POINTS_DIR)):
        raise ValueError(f'{self.path(POINTS_DIR)!r} holds files but {MAP_FILE} is missing: '
                         'not a map this package wrote; map into another directory.')
      return
    with open(self.path(MAP_FILE)) as f:
      old = json.load(f).get('settings', {})
    changed = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
    if not changed:
      return
    if not self._overwrite:
      first = changed[0]
      raise ValueError(
          f'{self.outdir!r} holds a map made with other settings ({", ".join(changed)}; e.g. '
          f'{first}: {old.get(first)!r} there, {self.settings.get(first)!r} now; "store_state" '
          'changes as training records more): pass overwrite=True (--overwrite) to replace it, '
          'or map into another directory.')
    for name in (MAP_FILE, FIT_FILE):
      if os.path.exists(self.path(name)):
        os.remove(self.path(name))
    shutil.rmtree(self.path(POINTS_DIR), ignore_errors=True)

  def write_json(self, extra: dict[str, Any]) -> None:
    _atomic(self.path(MAP_FILE), lambda f: f.write(json.dumps(
        dict(format=MAP_FORMAT, settings=self.settings, **extra), indent=1).encode()))

  def part(self, block: int) -> str:
    return self.path(POINTS_DIR, f'part-{block:06d}.parquet')


def _atomic(path: str, write: Callable[[Any], None]) -> None:
  """Writes ``path`` under a temporary name in its directory, then renames it."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.tmp-')
  try:
    with os.fdopen(fd, 'wb') as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.remove(tmp)
    raise


def _save_fit(path: str, fit: embedding_lib.InPCA, landmarks_L: np.ndarray,
              geodesic_GxK: np.ndarray) -> None:
  _atomic(path, lambda f: np.savez(f, landmarks=landmarks_L, geodesic=geodesic_GxK,
                                   **fit._asdict()))


def _load_fit(path: str) -> tuple[embedding_lib.InPCA, np.ndarray, np.ndarray]:
  with np.load(path) as saved:
    fit = embedding_lib.InPCA(**{k: saved[k] for k in embedding_lib.InPCA._fields})
    return fit._replace(grand_mean=float(fit.grand_mean)), saved['landmarks'], saved['geodesic']


def _digest(*arrays: Any) -> str:
  digest = hashlib.sha256()
  for array in arrays:
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()[:16]


def _store_state(traj, recorded_ExT: np.ndarray) -> str:
  """A digest of the points the map is made of: those recorded, and the members' statuses."""
  diverged_E = np.asarray([s == STATUS_DIVERGED for s in traj.status])
  return _digest(np.packbits(recorded_ExT), diverged_E)


def _probes(traj, split: str) -> str:
  """A digest of the probe set: its labels, and its indices in the dataset where known."""
  indices = traj.probe_indices(split) if hasattr(traj, 'probe_indices') else None
  return _digest(np.asarray(traj.labels(split), np.int64),
                 np.asarray([] if indices is None else indices, np.int64))


def block_size(num_landmarks: int) -> int:
  """Points per block: its (block x L) distances within BLOCK_DISTANCE_ENTRIES."""
  return int(max(1, min(MAX_BLOCK_POINTS, BLOCK_DISTANCE_ENTRIES // max(1, num_landmarks))))


def embed_trajectories(traj: TrajectoryStore, k: int = DEFAULT_COMPONENTS,
                       landmarks: int | None = None, split: str = 'train', *,
                       outdir: str | None = None, overwrite: bool = False,
                       method: str = 'auto', devices: Sequence[jax.Device] | None = None,
                       on_block: Callable[[int, int], None] | None = None
                       ) -> TrajectoryEmbedding:
  """Maps every recorded point of a sweep with (landmark) InPCA.

  Example:
    >>> emb = analysis.embed_trajectories(ensembles.load_trajectories(workdir), k=5)
    >>> emb.coords.reshape(len(traj.members), len(traj.epochs), 5)   # member-major

  Args:
    traj: a store (``ensembles.load_trajectories``; opened with ``allow_partial=True`` a store
      still being written maps what it has) or an object with its ``probs``/``labels``.
    k: components kept (at most L).
    landmarks: L, the points the InPCA is fitted on. None: every point up to
      LANDMARK_THRESHOLD points (a full InPCA), DEFAULT_LANDMARKS above.
    split: probe split, one of the store's ('train' or 'test' for the trainer's).
    outdir: if given, where the map is written as it is made (see the module docstring); a
      rerun resumes it.
    overwrite: replace a map in ``outdir`` made with other settings (else an error).
    method: eigensolver of the landmark fit (``embedding.inpca``).
    devices: where the distances are computed (default: every device of every process). When
      they span several processes, every one of them must make this call: each computes the
      landmark fit, then places every P-th block on its own devices (``outdir`` required, on
      a filesystem they share).
    on_block: called with (points done, points to do) on this process: once before the first
      block is placed (0 done), then after each block.

  Returns:
    A ``TrajectoryEmbedding``.

  Raises:
    ValueError: every member diverged, L outside [k, points], k < 1, a member not marked
      diverged with NaN probabilities, or an ``outdir`` in use or holding another map.
  """
  members = traj.members
  num_members, num_times = len(members), len(traj.epochs)
  devices = jax.devices() if devices is None else list(devices)
  processes = sorted({d.process_index for d in devices})
  if len(processes) > 1 and not outdir:
    raise ValueError(f'devices of {len(processes)} processes: give outdir, where they write '
                     'their shares of the map.')
  ok_E = np.asarray([s != STATUS_DIVERGED for s in traj.status])
  if not ok_E.any():
    raise ValueError(f'all {num_members} members diverged: nothing to map.')
  reader = _reader(traj, split)
  recorded_ExT = np.asarray(reader.recorded, bool)
  valid_ExT = recorded_ExT & ok_E[:, None]
  num_valid = int(valid_ExT.sum())
  if landmarks is None:
    landmarks = num_valid if num_valid <= LANDMARK_THRESHOLD else DEFAULT_LANDMARKS
  if not 1 <= k <= landmarks <= num_valid:
    raise ValueError(f'k={k} components on {landmarks} landmarks of {num_valid} points: need '
                     f'1 <= k <= landmarks <= {num_valid} (the recorded points of members '
                     'that did not diverge).')
  plan = _plan(reader, block_size(landmarks))
  left_out = {DIVERGED: int((~ok_E).sum()) * num_times,
              NOT_RECORDED: int((~recorded_ExT & ok_E[:, None]).sum())}
  settings = dict(store=os.path.abspath(getattr(traj, 'workdir', '')), split=split, k=k,
                  landmarks=int(landmarks), method=method, blocks=len(plan),
                  probes=_probes(traj, split), store_state=_store_state(traj, recorded_ExT))
  map_dir = _MapDir(outdir, settings, overwrite) if outdir else None
  leader = jax.process_index() == processes[0]
  share = _Share(processes, devices)
  with map_dir.hold() if map_dir and leader else contextlib.nullcontext():
    if map_dir and leader:
      map_dir.settle()  # Refuses another map, or clears it with ``overwrite``.
    share.wait('settled')
    if map_dir and os.path.exists(map_dir.path(FIT_FILE)):
      fit, landmarks_L, geodesic_GxK = _load_fit(map_dir.path(FIT_FILE))
      to_landmarks = None  # Read when a block needs them.
    else:
      landmarks_L = landmarks_lib.choose_landmarks(valid_ExT, landmarks)
      probs_LxNxC = reader.read_points(split, landmarks_L // num_times, landmarks_L % num_times)
      _check_finite(probs_LxNxC, landmarks_L // num_times, landmarks_L % num_times)
      fit = landmarks_lib.fit_landmarks(probs_LxNxC, k, method, devices)
      labels_N = np.asarray(traj.labels(split))
      geodesic_probs = geometry.geodesic(labels_N, probs_LxNxC.shape[-1],
                                         np.linspace(0.0, 1.0, GEODESIC_POINTS))
      geodesic_GxK = np.asarray(fit.project(np.asarray(
          distances.bhattacharyya(geodesic_probs, probs_LxNxC, devices=share.mine))), np.float32)
      if map_dir and leader:
        map_dir.write_json({})
        _save_fit(map_dir.path(FIT_FILE), fit, landmarks_L, geodesic_GxK)
      # Read once: the fit's landmarks go to the devices for the blocks, the host lets go.
      to_landmarks = distances.DistancesTo(probs_LxNxC, _largest(plan), devices=share.mine)
      del probs_LxNxC
    share.wait('fit')  # The leader wrote the fit before anyone writes a part.
    coords_PxK = _project_all(traj, reader, plan, split, fit, landmarks_L, to_landmarks,
                              valid_ExT, map_dir, share, on_block)
    if map_dir and leader:
      map_dir.write_json(dict(complete=True, points=num_members * num_times,
                              placed=int(valid_ExT.sum()), left_out=left_out))
  return TrajectoryEmbedding(
      coords=coords_PxK, eigenvalues=fit.eigenvalues, explained_stress=fit.explained_stress,
      landmarks=landmarks_L, placed=valid_ExT.reshape(-1), left_out=left_out, fit=fit,
      geodesic=geodesic_GxK, num_times=num_times, split=split)


def _check_finite(probs_PxNxC: np.ndarray, members_P: np.ndarray, times_P: np.ndarray) -> None:
  finite_P = np.isfinite(probs_PxNxC).reshape(len(probs_PxNxC), -1).all(axis=1)
  if not finite_P.all():
    i = int(np.flatnonzero(~finite_P)[0])
    raise ValueError(f'member {members_P[i]} has status "ok" but NaN/inf probabilities at '
                     f'recording time {times_P[i]}: the store is inconsistent; mark it diverged '
                     'or retrain it.')


def _largest(plan) -> int:
  """The points of the plan's largest block (every block is padded to it: one program)."""
  return max((len(members) * len(times) for members, times in plan), default=1)


def _project_all(traj, reader, plan, split, fit, landmarks_L, to_landmarks, valid_ExT, map_dir,
                 share, on_block) -> np.ndarray:
  """Places every block (this process's share), writing parts; returns all coordinates."""
  num_members, num_times = valid_ExT.shape
  k = fit.eigenvalues.shape[0]
  coords_PxK = np.full((num_members * num_times, k), np.nan, np.float32)
  landmark_P = np.zeros(num_members * num_times, bool)
  landmark_P[landmarks_L] = True
  basis = (jnp.asarray(fit.column_means, jnp.float32), jnp.float32(fit.grand_mean),
           jnp.asarray(_basis(fit), jnp.float32))
  columns = _Columns(traj, landmark_P, valid_ExT, k)
  mine = share.blocks(len(plan))
  todo = sum(int(valid_ExT[np.ix_(plan[b][0], plan[b][1])].sum()) for b in mine)
  done = 0
  if on_block:
    on_block(done, todo)
  for b in mine:
    members_B, times_B = plan[b]
    if map_dir and os.path.exists(map_dir.part(b)):
      continue  # Written by an earlier run: read back below.
    flat = (members_B[:, None] * num_times + times_B[None, :]).reshape(-1)
    valid = valid_ExT.reshape(-1)[flat]
    if valid.any():
      if to_landmarks is None:  # A resumed map: the landmarks are read for the first block left.
        to_landmarks = distances.DistancesTo(reader.read_points(
            split, landmarks_L // num_times, landmarks_L % num_times), _largest(plan),
            devices=share.mine)
      points = flat[valid]
      probs_BxNxC = reader.read_points(split, points // num_times, points % num_times)
      _check_finite(probs_BxNxC, points // num_times, points % num_times)
      d_BxL = to_landmarks(probs_BxNxC)
      # The distances are replicated over the devices: place them on one, once.
      coords_PxK[points] = np.asarray(_place(d_BxL.addressable_data(0), *basis))
      progress_B = geometry.progress(probs_BxNxC, np.asarray(traj.labels(split)))
      done += len(points)
    else:
      points, progress_B = flat[:0], np.zeros(0)
    if map_dir:
      table = columns.table(flat, coords_PxK[flat], dict(zip(points.tolist(), progress_B)))
      _atomic(map_dir.part(b), lambda f, t=table: pq.write_table(t, f))
    if on_block:
      on_block(done, todo)
  if map_dir:
    share.wait('projected')
    coords_PxK = _read_coords(map_dir, coords_PxK.shape)
  return coords_PxK


def _read_coords(map_dir: _MapDir, shape: tuple[int, int]) -> np.ndarray:
  """Every part's coordinates (this and earlier runs, every process), member-major."""
  coords_PxK = np.full(shape, np.nan, np.float32)
  names = [f'x{a + 1}' for a in range(shape[1])]
  table = pq.read_table(map_dir.path(POINTS_DIR), columns=['point', *names])
  point_P = table.column('point').to_numpy()
  for a, name in enumerate(names):
    coords_PxK[point_P, a] = table.column(name).to_numpy(zero_copy_only=False)
  return coords_PxK


class _Columns:
  """The per-point columns of the parts: identity, training state, hparams, coordinates."""

  def __init__(self, traj, landmark_P, valid_ExT, k):
    num_members, num_times = valid_ExT.shape
    self._num_times, self._k = num_times, k
    self._landmark_P = landmark_P
    self._epochs_T = np.asarray(traj.epochs, np.float64)
    steps = getattr(traj, 'steps', None)
    self._steps_P = (np.full(valid_ExT.size, -1, np.int64) if steps is None
                     else np.asarray(steps, np.int64).reshape(-1))
    traj_metrics = getattr(traj, 'metrics', {})
    self._metrics = {m: np.asarray(traj_metrics[m], np.float32).reshape(-1) if m in traj_metrics
                     else np.full(valid_ExT.size, np.nan, np.float32) for m in METRICS}
    self._status_E = list(traj.status)
    ok_ExT = np.asarray([s != STATUS_DIVERGED for s in self._status_E])[:, None] | valid_ExT
    # Codes into _REASONS (one byte a point): placed, not recorded, diverged.
    self._reason_P = np.where(valid_ExT, 0, np.where(ok_ExT, 1, 2)).astype(np.int8).reshape(-1)
    self._hparams = _hparam_columns(list(traj.members))

  def table(self, flat_P: np.ndarray, coords_PxK: np.ndarray, progress: dict[int, float]
            ) -> pa.Table:
    member_P, time_P = flat_P // self._num_times, flat_P % self._num_times
    data = {
        'point': pa.array(flat_P, pa.int64()), 'member': pa.array(member_P, pa.int64()),
        'time': pa.array(time_P, pa.int64()), 'epoch': pa.array(self._epochs_T[time_P]),
        'step': pa.array(self._steps_P[flat_P]),
        'status': pa.array([self._status_E[e] for e in member_P], pa.string()),
        'left_out': pa.array(np.asarray(_REASONS)[self._reason_P[flat_P]].tolist(), pa.string()),
        'landmark': pa.array(self._landmark_P[flat_P]),
        'progress': pa.array([progress.get(int(p), np.nan) for p in flat_P], pa.float64()),
    }
    for m in METRICS:
      data[m] = pa.array(self._metrics[m][flat_P])
    for name, (kind, values) in self._hparams.items():
      data[name] = pa.array([values[e] for e in member_P], kind)
    for a in range(self._k):
      data[f'x{a + 1}'] = pa.array(coords_PxK[:, a])
    return pa.table(data)
