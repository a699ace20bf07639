"""Reading a trajectories store: ``load_trajectories(workdir)`` and the ``TrajectoryStore``
protocol, which is all the analysis knows about training.

Opening a store reads its metadata only: the manifest, and the small arrays of every record
(steps, metrics, divergence) - never a probability. Probabilities are read on demand, either
all at once (``probs(split)``, for small stores) or in blocks of points (``block_plan`` and
``read_block``, ``read_points``) that touch only the records they need, so a sweep of any size
is mapped in bounded memory. Measured on a 2-core CPU (benchmarks/README.md, "Store reads"):
one record of 250 members x 200 probes x 10 classes (float16) restores in ~8 ms and its small
arrays alone in ~11 ms, and inside the map reads are 6-9% of the projection's time, so the
layout of one Orbax checkpoint per cohort and recording time stays: a block of points costs
one restore per (cohort, time) it spans.

Records are restored as NumPy arrays, whatever devices and hosts wrote them, so a store written
by a pod reads on a laptop; nothing here imports the trainer, Flax, Optax or TFDS. A store still
being written (or whose training was killed) opens with ``allow_partial=True``: its missing
points are listed in ``missing`` and masked in ``recorded``.
"""

from __future__ import annotations

import os
import types
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np
import orbax.checkpoint as ocp

from ensembles.store.format import (MEMBERS_FORMAT_VERSION, METRICS, RECORD_ITEM, RECORD_KEYS,
                                    SPLITS, STATUS_DIVERGED, STATUS_OK, StoreError, cohort_dir,
                                    read_manifest, store_names)

# The small arrays of a record, read when a store opens.
METADATA_KEYS = ('step', 'diverged_at') + METRICS

# Missing records of one cohort warned about one by one; the rest are counted in one warning.
_WARNED_PER_COHORT = 5


class TrajectoryStore(Protocol):
  """What the analysis reads from a store (``load_trajectories(workdir)`` returns one)."""
  members: list[dict[str, Any]]
  epochs: np.ndarray
  status: list[str]

  def probs(self, split: str) -> np.ndarray: ...

  def labels(self, split: str) -> np.ndarray: ...


class BlockSpec(NamedTuple):
  """Points of one block: members of one cohort (sweep indices) at some recording times."""
  cohort: int
  members: np.ndarray
  times: np.ndarray


class Block(NamedTuple):
  """The recorded points of a block, member-major, and their probabilities.

  Attributes:
    members: (P,) sweep index of each point's member.
    times: (P,) recording-time index of each point.
    probs: (P, N, C) float32 probabilities on the split's probes.
  """
  members: np.ndarray
  times: np.ndarray
  probs: np.ndarray


def block_plan(cohorts: dict[int, np.ndarray], num_times: int, max_points: int
               ) -> list[BlockSpec]:
  """Blocks of at most ``max_points`` points: members of one cohort at consecutive times.

  Each cohort's times, then its members, are split into as few groups as fit, of sizes that
  differ by at most one (13, 13, 12, 12 rather than 16, 16, 16, 2), so every block costs about
  the same. The plan depends on the manifest alone (missing points included): it is the same
  on every process and on every reopening.

  Args:
    cohorts: cohort index -> (E_c,) sweep indices of its members.
    num_times: T.
    max_points: the most points of a block.
  """
  if max_points < 1:
    raise ValueError(f'max_points={max_points}: a block holds at least 1 point.')
  plan = []
  for cohort, rows in cohorts.items():
    time_groups = -(-num_times // max(1, min(num_times, max_points // max(1, len(rows)))))
    for times in np.array_split(np.arange(num_times), time_groups):
      member_groups = -(-len(rows) * len(times) // max_points)
      plan += [BlockSpec(cohort, members, times)
               for members in np.array_split(rows, member_groups) if len(members)]
  return plan


def _record_path(directory: str, index: int) -> str:
  return os.path.join(directory, 'records', str(index), RECORD_ITEM)


def _restore(checkpointer: ocp.Checkpointer, directory: str, index: int,
             keys: Sequence[str]) -> dict[str, np.ndarray]:
  """Reads the arrays ``keys`` of recording time ``index`` of one cohort as NumPy arrays.

  Restoring as ``np.ndarray`` ignores the devices and hosts that saved the arrays, so a
  store written by a pod reads on a laptop; a partial restore reads only ``keys``' files.
  Missing or torn -> a clear ``StoreError``.
  """
  path = _record_path(directory, index)
  if not os.path.isdir(path):
    raise StoreError(f'recording step {index} is missing: {path} does not exist '
                     '(training unfinished, or the store was damaged).')
  as_numpy = {k: ocp.RestoreArgs(restore_type=np.ndarray) for k in keys}
  try:
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
        item={k: 0 for k in keys}, restore_args=as_numpy,
        partial_restore=set(keys) != set(RECORD_KEYS)))
  except Exception as e:  # Orbax raises many types for torn files.
    raise StoreError(f'recording step {index} cannot be read from {path}: {e}') from e
  return {k: restored[k] for k in keys}


def _local_checkpointer() -> ocp.Checkpointer:
  """A reader of this process alone: under ``jax.distributed`` each process reads the records
  it needs, when it needs them, without waiting for the others (Orbax's default restore is a
  barrier of every process)."""
  here = jax.process_index()
  return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(), multiprocessing_options=(
      ocp.options.MultiprocessingOptions(primary_host=here, active_processes={here})))


def read_record(directory: str, index: int) -> dict[str, np.ndarray]:
  """Recording time ``index`` of the cohort stored in ``directory`` (see ``cohort_dir``)."""
  with _local_checkpointer() as checkpointer:
    return _restore(checkpointer, directory, index, RECORD_KEYS)


class Trajectories:
  """Every member's prediction trajectory on a grid of recording times, from either layout.

  ``load_trajectories`` returns one, whichever layout the store has (the trainer's cohorts,
  format 1, or ``TrajectoryWriter``'s members, format 2).

  Attributes:
    workdir: the store's directory.
    members: each member's hparams (dicts), in store order.
    epochs: (T,) recording times, in ``time_unit``s.
    time_unit: 'epoch', or 'step' for written stores whose members did not all give epochs.
    steps: (E, T) the step of each member at each recording time (-1: not recorded).
    metrics: dict of (E, T) arrays: ``<split>_loss`` and ``<split>_accuracy`` on the probes
      (NaN: not recorded).
    status: per member, ``STATUS_OK`` or ``STATUS_DIVERGED``.
    diverged_at: (E,) step at which a member diverged, -1 if it did not.
    num_classes: C.
    splits: the probe splits.
    recorded: (E, T) bool, the points recorded on every split.
    missing: what is absent that should be there: (cohort, recording index) records skipped
      with ``allow_partial``, or (member, step) checkpoints written on some splits only.
  """

  workdir: str
  members: list[dict[str, Any]]
  epochs: np.ndarray
  time_unit: str = 'epoch'
  steps: np.ndarray
  metrics: dict[str, np.ndarray]
  status: list[str]
  diverged_at: np.ndarray
  num_classes: int
  splits: tuple[str, ...] = SPLITS
  recorded: np.ndarray
  missing: list[tuple[int, int]]
  # Split -> sha256 of the probe inputs, where the writer was given them.
  probe_inputs_sha256: Mapping[str, str | None] = types.MappingProxyType({})
  # Probe labels and dataset indices (None: unknown) of each split.
  _labels: dict[str, np.ndarray]
  _indices: dict[str, np.ndarray | None]
  # Cohort index -> its members (sweep indices): the blocks of block_plan.
  _cohorts: dict[int, np.ndarray]

  def num_probes(self, split: str = 'train') -> int:
    return len(self._labels[self._check_split(split)])

  def probs(self, split: str = 'train') -> np.ndarray:
    """(E, T, N, C) float32 probabilities on the ``split`` probe set (NaN where missing).

    Reads every record once and keeps the result: for small stores. Large ones are read in
    blocks (``block_plan``, ``read_block``).
    """
    if self._check_split(split) not in self._probs:
      shape = (*self.recorded.shape, self.num_probes(split), self.num_classes)
      probs = np.full(shape, np.nan, np.float32)
      members_P, times_P = np.nonzero(self.recorded)
      probs[members_P, times_P] = self.read_points(split, members_P, times_P)
      self._probs[split] = probs
    return self._probs[split]

  def block_plan(self, max_points: int) -> list[BlockSpec]:
    """Cuts the (members x times) grid into blocks of at most ``max_points`` points (see
    ``block_plan``); reading a block restores each of its (cohort, time) records once."""
    return block_plan(self._cohorts, len(self.epochs), max_points)

  def read_block(self, split: str, spec: BlockSpec) -> Block:
    """The recorded points of one block of ``block_plan`` (missing ones left out)."""
    recorded_ExT = self.recorded[np.ix_(spec.members, spec.times)]
    members_P = np.repeat(spec.members, len(spec.times))[recorded_ExT.reshape(-1)]
    times_P = np.tile(spec.times, len(spec.members))[recorded_ExT.reshape(-1)]
    return Block(members_P, times_P, self.read_points(split, members_P, times_P))

  def read_points(self, split: str, members: Any, times: Any) -> np.ndarray:
    """(P, N, C) float32 probabilities of the points (members[i], times[i]).

    Each record (or chunk) holding some of the points is read once, whatever their order.

    Raises:
      ValueError: a point outside the grid or not recorded.
    """
    split = self._check_split(split)
    members_P, times_P = np.asarray(members, np.int64), np.asarray(times, np.int64)
    num, num_times = self.recorded.shape
    outside = (members_P < 0) | (members_P >= num) | (times_P < 0) | (times_P >= num_times)
    if outside.any() or members_P.shape != times_P.shape:
      raise ValueError(f'points must be (member, time) pairs inside ({num}, {num_times}).')
    absent = ~self.recorded[members_P, times_P]
    if absent.any():
      i = int(np.flatnonzero(absent)[0])
      raise ValueError(f'point (member {members_P[i]}, time {times_P[i]}) is not recorded.')
    out = np.empty((len(members_P), self.num_probes(split), self.num_classes), np.float32)
    if len(members_P):
      self._read_into(out, split, members_P, times_P)
    return out

  def _read_into(self, out: np.ndarray, split: str, members_P: np.ndarray,
                 times_P: np.ndarray) -> None:
    """Fills ``out`` with the probabilities of recorded points (checked by the caller)."""
    raise NotImplementedError

  def labels(self, split: str = 'train') -> np.ndarray:
    """(N,) int labels of the ``split`` probe set."""
    return self._labels[self._check_split(split)]

  def probe_indices(self, split: str = 'train') -> np.ndarray | None:
    """(N,) indices of the probe examples in their dataset's ``split``; None if not given."""
    return self._indices[self._check_split(split)]

  def _check_split(self, split: str) -> str:
    if split not in self.splits:
      raise ValueError(f'split {split!r}: accepted {self.splits}.')
    return split

  def __repr__(self) -> str:
    return (f'Trajectories({self.workdir!r}: {len(self.members)} members, '
            f'{len(self.epochs)} times, {self.status.count(STATUS_DIVERGED)} diverged)')


class _CohortTrajectories(Trajectories):
  """A store written by ``train_and_record`` (format 1): one Orbax record per cohort and time."""

  def __init__(self, workdir: str, manifest: dict[str, Any], allow_partial: bool):
    self.workdir = workdir
    self.members = manifest['members']
    self.epochs = np.asarray(manifest['epochs'], np.float64)
    self.num_classes = manifest['num_classes']
    probes = manifest['probes']
    self._labels = {s: np.asarray(probes[f'{s}_labels'], np.int64) for s in SPLITS}
    self._indices = {s: np.asarray(probes[f'{s}_indices'], np.int64) for s in SPLITS}
    self._cohorts = {c['index']: np.asarray(c['members'], np.int64) for c in manifest['cohorts']}
    num, times = len(self.members), len(self.epochs)
    # Each member's cohort and its row in the cohort's records.
    self._cohort_E = np.empty(num, np.int64)
    self._position_E = np.empty(num, np.int64)
    for cohort, rows in self._cohorts.items():
      self._cohort_E[rows], self._position_E[rows] = cohort, np.arange(len(rows))
    self.steps = np.full((num, times), -1, np.int64)
    self.metrics = {k: np.full((num, times), np.nan, np.float32) for k in METRICS}
    self.recorded = np.zeros((num, times), bool)
    self.missing = []
    self.diverged_at = np.full((num,), -1, np.int64)
    self._checkpointer = _local_checkpointer()
    for cohort, rows in self._cohorts.items():
      skipped = []
      for t in range(times):
        try:
          record = self._read(cohort, t, METADATA_KEYS)
        except StoreError as e:
          if not allow_partial:
            raise StoreError(f'{e} Pass allow_partial=True to load the rest (the missing '
                             'points become NaN).') from e
          skipped.append(e)
          self.missing.append((cohort, t))
          continue
        self.recorded[rows, t] = True
        self.steps[rows, t] = record['step']
        for k in METRICS:
          self.metrics[k][rows, t] = record[k]
        self.diverged_at[rows] = np.maximum(self.diverged_at[rows], record['diverged_at'])
      for e in skipped[:_WARNED_PER_COHORT]:
        warnings.warn(f'skipped: {e}', stacklevel=3)
      if len(skipped) > _WARNED_PER_COHORT:
        warnings.warn(f'skipped {len(skipped) - _WARNED_PER_COHORT} more recording steps of '
                      f'cohort {cohort}.', stacklevel=3)
    self.status = [STATUS_DIVERGED if d >= 0 else STATUS_OK for d in self.diverged_at]
    self._probs: dict[str, np.ndarray] = {}

  def _read(self, cohort: int, t: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
    return _restore(self._checkpointer, cohort_dir(self.workdir, cohort), t, keys)

  def _read_into(self, out, split, members_P, times_P) -> None:
    key = f'{split}_probs'
    cohort_P = self._cohort_E[members_P]
    for cohort, t in sorted(set(zip(cohort_P.tolist(), times_P.tolist()))):
      here = np.flatnonzero((cohort_P == cohort) & (times_P == t))
      out[here] = self._read(cohort, t, (key,))[key][self._position_E[members_P[here]]]


def load_trajectories(workdir: str | Sequence[str], allow_partial: bool = False) -> Trajectories:
  """Opens a trajectories store (or several as one): its metadata now, its probabilities when
  asked.

  Args:
    workdir: the store's directory (given to ``train_and_record`` or ``TrajectoryWriter``), or
      a list of them: stores of the same probes, mapped jointly (``joint.JointTrajectories``;
      each member's hparams gain a ``store`` key, the directory's name).
    allow_partial: skip missing or unreadable recording times of a trainer store with a
      warning (their probabilities, metrics and steps become NaN / -1, ``recorded`` is False
      there) instead of raising: a store still being trained opens this way. Stores written
      by ``TrajectoryWriter`` always open with what is committed.

  Returns:
    A ``Trajectories`` object.

  Raises:
    StoreError: not a store, another format version, a missing/torn step, or stores that
      cannot be mapped jointly.
  """
  if not isinstance(workdir, (str, os.PathLike)):
    paths = list(workdir)
    if len(paths) == 1:
      return load_trajectories(paths[0], allow_partial)
    from ensembles.store import joint  # pylint: disable=import-outside-toplevel
    return joint.JointTrajectories([load_trajectories(p, allow_partial) for p in paths],
                                   store_names(paths))
  workdir = os.path.abspath(workdir)  # Orbax reads absolute paths only.
  manifest = read_manifest(workdir)
  if manifest['format_version'] == MEMBERS_FORMAT_VERSION:
    from ensembles.store import members_reader  # pylint: disable=import-outside-toplevel
    return members_reader.MemberTrajectories(workdir, manifest)
  return _CohortTrajectories(workdir, manifest, allow_partial)
