"""The trajectories store: the only thing the analysis knows about training.

Layout of a workdir::

    sweep.json                     format version, the config, members, cohorts, grid, probes
    cohorts/<c>/records/<t>/       Orbax: probabilities + metrics at recording time t
    cohorts/<c>/state/<t>/         Orbax: latest resumable CohortState

``load_trajectories`` needs nothing but the workdir: no config file, no trainer.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from ensembles import record as record_lib

FORMAT_VERSION = 1
SWEEP_FILE = 'sweep.json'
SPLITS = ('train', 'test')


class StoreError(ValueError):
  """A trajectories store that cannot be read; the message says which file and why."""


def cohort_dir(workdir: str, cohort_index: int) -> str:
  return os.path.join(workdir, 'cohorts', f'{cohort_index:03d}')


def write_manifest(workdir: str, manifest: dict[str, Any]) -> None:
  """Writes ``sweep.json`` atomically (temporary file, then rename)."""
  os.makedirs(workdir, exist_ok=True)
  manifest = dict(manifest, format_version=FORMAT_VERSION)
  fd, tmp = tempfile.mkstemp(dir=workdir, prefix='.sweep-', suffix='.json')
  with os.fdopen(fd, 'w') as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, os.path.join(workdir, SWEEP_FILE))


def read_manifest(workdir: str) -> dict[str, Any]:
  """Reads and version-checks ``sweep.json``."""
  path = os.path.join(workdir, SWEEP_FILE)
  if not os.path.exists(path):
    raise StoreError(f'{path} does not exist: {workdir!r} is not a trajectories store '
                     '(written by ensembles.train_and_record).')
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise StoreError(f'{path} cannot be read as JSON: {e}') from e
  version = manifest.get('format_version')
  if version != FORMAT_VERSION:
    raise StoreError(f'{path} has store format version {version!r}; this version of ensembles '
                     f'reads version {FORMAT_VERSION} only. Use the ensembles release that '
                     'wrote it, or train again.')
  return manifest


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
  path = os.path.join(directory, 'records', str(index), record_lib.RECORD_ITEM)
  if not os.path.isdir(path):
    raise StoreError(f'recording step {index} is missing: {path} does not exist '
                     '(training unfinished, or the store was damaged).')
  try:
    as_numpy = {k: ocp.RestoreArgs(restore_type=np.ndarray) for k in record_lib.RECORD_KEYS}
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
    status: per member, 'ok' or 'diverged'.
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
    self.metrics = {k: np.full((num, times), np.nan, np.float32) for k in record_lib.METRICS}
    self.missing: list[tuple[int, int]] = []
    self.diverged_at = np.full((num,), -1, np.int64)
    self._probs = {s: None for s in SPLITS}
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
        for k in record_lib.METRICS:
          self.metrics[k][rows, t] = record[k]
        for s in SPLITS:
          probs[s][rows, t] = record[f'{s}_probs']
        self.diverged_at[rows] = np.maximum(self.diverged_at[rows], record['diverged_at'])
    checkpointer.close()
    self._probs = probs
    self.status = ['diverged' if d >= 0 else 'ok' for d in self.diverged_at]

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
            f'{len(self.epochs)} times, {self.status.count("diverged")} diverged)')


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


def members_equal(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> bool:
  return [dict(sorted(m.items())) for m in a] == [dict(sorted(m.items())) for m in b]
