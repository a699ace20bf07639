"""Reading a trajectories store: ``load_trajectories(workdir)`` and the ``TrajectoryStore``
protocol, which is all the analysis knows about training.

Records are restored as NumPy arrays, whatever devices and hosts wrote them, so a store written
by a pod reads on a laptop; nothing here imports the trainer, Flax, Optax or TFDS.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Protocol

import numpy as np
import orbax.checkpoint as ocp

from ensembles.store.format import (METRICS, RECORD_ITEM, RECORD_KEYS, SPLITS, STATUS_DIVERGED,
                                    STATUS_OK, StoreError, cohort_dir, read_manifest)


class TrajectoryStore(Protocol):
  """What the analysis reads from a store (``load_trajectories(workdir)`` returns one)."""
  members: list[dict[str, Any]]
  epochs: np.ndarray
  status: list[str]

  def probs(self, split: str) -> np.ndarray: ...

  def labels(self, split: str) -> np.ndarray: ...


def read_record(directory: str, index: int) -> dict[str, np.ndarray]:
  """Recording time ``index`` of the cohort stored in ``directory`` (see ``cohort_dir``)."""
  with ocp.PyTreeCheckpointer() as checkpointer:
    return _restore_record(checkpointer, directory, index)


def _restore_record(checkpointer: ocp.PyTreeCheckpointer, directory: str,
                    index: int) -> dict[str, np.ndarray]:
  """Reads recording time ``index`` of one cohort as NumPy arrays, whatever wrote it.

  Restoring as ``np.ndarray`` ignores the devices and hosts that saved the arrays, so a
  store written by a pod reads on a laptop. Missing or torn → a clear ``StoreError``.
  """
  path = os.path.join(directory, 'records', str(index), RECORD_ITEM)
  if not os.path.isdir(path):
    raise StoreError(f'recording step {index} is missing: {path} does not exist '
                     '(training unfinished, or the store was damaged).')
  try:
    as_numpy = {k: ocp.RestoreArgs(restore_type=np.ndarray) for k in RECORD_KEYS}
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  except Exception as e:  # Orbax raises many types for torn files.
    raise StoreError(f'recording step {index} cannot be read from {path}: {e}') from e
  return dict(restored)


class Trajectories:
  """Every member's prediction trajectory, as written by ``train_and_record``.

  Attributes:
    members: each member's resolved hparams (dicts), in sweep order.
    epochs: (T,) recording times in epochs.
    steps: (E, T) the step of each member at each recording time.
    metrics: dict of (E, T) arrays: train/test loss and accuracy on the probes.
    status: per member, ``STATUS_OK`` or ``STATUS_DIVERGED``.
    diverged_at: (E,) step at which a member diverged, -1 if it did not.
    num_classes: C.
    missing: (cohort index, recording index) pairs skipped with ``allow_partial``.
  """

  def __init__(self, workdir: str, allow_partial: bool = False):
    workdir = os.path.abspath(workdir)  # Orbax reads absolute paths only.
    self.workdir = workdir
    manifest = read_manifest(workdir)
    self.members: list[dict[str, Any]] = manifest['members']
    self.epochs = np.asarray(manifest['epochs'], np.float64)
    self.num_classes: int = manifest['num_classes']
    self._probes = manifest['probes']
    num, times = len(self.members), len(self.epochs)
    self.steps = np.full((num, times), -1, np.int64)
    self.metrics = {k: np.full((num, times), np.nan, np.float32) for k in METRICS}
    self.missing: list[tuple[int, int]] = []
    self.diverged_at = np.full((num,), -1, np.int64)
    shapes = {s: (num, times, len(self._probes[f'{s}_labels']), self.num_classes)
              for s in SPLITS}
    probs = {s: np.full(shapes[s], np.nan, np.float32) for s in SPLITS}
    checkpointer = ocp.PyTreeCheckpointer()
    for cohort in manifest['cohorts']:
      rows = np.asarray(cohort['members'])
      directory = cohort_dir(workdir, cohort['index'])
      for t in range(times):
        try:
          record = _restore_record(checkpointer, directory, t)
        except StoreError as e:
          if not allow_partial:
            raise StoreError(f'{e} Pass allow_partial=True to load the rest (the missing '
                             'points become NaN).') from e
          warnings.warn(f'skipped: {e}', stacklevel=3)
          self.missing.append((cohort['index'], t))
          continue
        self.steps[rows, t] = record['step']
        for k in METRICS:
          self.metrics[k][rows, t] = record[k]
        for s in SPLITS:
          probs[s][rows, t] = record[f'{s}_probs']
        self.diverged_at[rows] = np.maximum(self.diverged_at[rows], record['diverged_at'])
    checkpointer.close()
    self._probs = probs
    self.status = [STATUS_DIVERGED if d >= 0 else STATUS_OK for d in self.diverged_at]

  def probs(self, split: str = 'train') -> np.ndarray:
    """(E, T, N, C) float32 probabilities on the ``split`` probe set."""
    return self._probs[_check_split(split)]

  def labels(self, split: str = 'train') -> np.ndarray:
    """(N,) int labels of the ``split`` probe set."""
    return np.asarray(self._probes[f'{_check_split(split)}_labels'], np.int64)

  def probe_indices(self, split: str = 'train') -> np.ndarray:
    """(N,) indices of the probe examples in the dataset's ``split``."""
    return np.asarray(self._probes[f'{_check_split(split)}_indices'], np.int64)

  def __repr__(self) -> str:
    return (f'Trajectories({self.workdir!r}: {len(self.members)} members, '
            f'{len(self.epochs)} times, {self.status.count(STATUS_DIVERGED)} diverged)')


def _check_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f'split {split!r}: accepted {SPLITS}.')
  return split


def load_trajectories(workdir: str, allow_partial: bool = False) -> Trajectories:
  """Reads a trajectories store.

  Args:
    workdir: the directory given to ``train_and_record``.
    allow_partial: skip missing or unreadable recording times with a warning (their
      probabilities, metrics and steps become NaN / -1) instead of raising.

  Returns:
    A ``Trajectories`` object.

  Raises:
    StoreError: not a store, another format version, or a missing/torn step.
  """
  return Trajectories(workdir, allow_partial)
