"""Recording grid and trajectory writer (Orbax).

Recording times are given in epochs so that every cohort of a sweep shares one
time grid; each cohort turns them into its own steps. The default grid is dense
early and sparse late, always with step 0 and the last step.

Each cohort writes under ``<workdir>/cohorts/<index>/``:

* ``records/<t>/`` — one Orbax checkpoint per recording time ``t``: the
  members' eval-mode probabilities on both probe sets and their metrics;
* ``state/<step>/`` — the latest ``CohortState`` (for resume), under its training
  step: after a record, or at an epoch's end between two recordings, once
  ``config.train.checkpoint_every_seconds`` have passed since the last one, and
  at the end; committed only after every record before it. Orbax commits each
  step directory atomically (written under a temporary name, then renamed), so a
  reader never sees a half-written step.

Resuming restores the latest state and trains on from its step; recording times
already in the store are not written again (training is deterministic, so they
would be identical).
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ensembles import train as train_lib

RECORD_ITEM = 'record'
STATE_ITEM = 'state'


@dataclasses.dataclass(frozen=True)
class RecordConfig:
  """When and how predictions are recorded (``config.record``)."""
  dense_epochs: float
  dense_per_epoch: int
  every_epoch_until: float
  sparse_every: float
  dtype: str
  train_probe_size: int | None
  test_probe_size: int | None
  probe_seed: int

  @classmethod
  def from_config(cls, record: ml_collections.ConfigDict) -> RecordConfig:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(record) - fields)
    if unknown:
      raise ValueError(f'config.record has unknown keys {unknown}; accepted: {sorted(fields)}.')
    values = {name: record[name] for name in fields}
    cfg = cls(**values)
    if cfg.dtype not in ('float32', 'float16'):
      raise ValueError(f'config.record.dtype={cfg.dtype!r}: accepted float32, float16.')
    for name in ('dense_per_epoch', 'sparse_every'):
      if not getattr(cfg, name) > 0:
        raise ValueError(f'config.record.{name}={getattr(cfg, name)!r}: must be > 0.')
    for name in ('dense_epochs', 'every_epoch_until'):
      if not getattr(cfg, name) >= 0:
        raise ValueError(f'config.record.{name}={getattr(cfg, name)!r}: must be >= 0.')
    return cfg


def default_record_config() -> ml_collections.ConfigDict:
  """``config.record`` defaults: about 4/epoch early, then 1/epoch, then every few."""
  return ml_collections.ConfigDict(dict(
      dense_epochs=2.0,        # record dense_per_epoch times per epoch until this epoch
      dense_per_epoch=4,       # recordings per epoch in the dense phase
      every_epoch_until=10.0,  # then once per epoch until this epoch
      sparse_every=5.0,        # then every this many epochs (and at the end)
      dtype='float32',         # storage dtype of probabilities: float32 or float16
      train_probe_size=ml_collections.config_dict.placeholder(int),  # None: all of train
      test_probe_size=ml_collections.config_dict.placeholder(int),   # None: all of test
      probe_seed=0,            # seed of the stratified probe subsets
  ))


def recording_epochs(epochs: float, cfg: RecordConfig) -> np.ndarray:
  """The shared recording grid in epochs, from 0 to ``epochs`` inclusive."""
  dense = np.arange(0.0, min(cfg.dense_epochs, epochs), 1.0 / cfg.dense_per_epoch)
  start = np.ceil(cfg.dense_epochs) if cfg.dense_epochs > 0 else 0.0
  middle = np.arange(start, min(cfg.every_epoch_until, epochs), 1.0)
  start = max(start, np.ceil(cfg.every_epoch_until))
  sparse = np.arange(start, epochs, cfg.sparse_every)
  grid = np.unique(np.concatenate([[0.0], dense, middle, sparse, [float(epochs)]]))
  return grid[grid <= epochs]


def recording_steps(epochs_grid: np.ndarray, steps_per_epoch: int) -> np.ndarray:
  """The grid in steps for one cohort: rounded, unique, with 0 and the last step.

  Two grid times that round to the same step are recorded once (at that step).
  """
  return np.unique(np.round(np.asarray(epochs_grid) * steps_per_epoch).astype(np.int64))


class CohortWriter:
  """Writes one cohort's records and resumable state through Orbax."""

  def __init__(self, directory: str, dtype: str, num_members: int):
    self._dtype = np.dtype(dtype)
    self._rows = slice(0, num_members)  # Padding members beyond are not recorded.
    # A killed run leaves unfinished step directories under temporary names: never read,
    # removed here before writing again.
    # Across hosts, each manager needs barriers of its own (they are keyed by step).
    barriers = lambda name: ocp.options.MultiprocessingOptions(
        barrier_sync_key_prefix=f'{os.path.basename(directory)}-{name}')
    self._records = ocp.CheckpointManager(
        os.path.join(directory, 'records'), item_names=(RECORD_ITEM,),
        options=ocp.CheckpointManagerOptions(
            cleanup_tmp_directories=True, multiprocessing_options=barriers('records')))
    self._state = ocp.CheckpointManager(
        os.path.join(directory, 'state'), item_names=(STATE_ITEM,),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, cleanup_tmp_directories=True,
            multiprocessing_options=barriers('state')))

  def recorded(self) -> set[int]:
    return set(self._records.all_steps())

  def latest_state_step(self) -> int | None:
    """The key of the latest state: its training step (stores written before states were
    keyed by step: its recording index; resuming reads the step from the state itself)."""
    return self._state.latest_step()

  def write_record(self, index: int, state: train_lib.CohortState,
                   evaluation: train_lib.Evaluation) -> None:
    """Saves the record of recording time ``index`` (asynchronously)."""
    # Global (possibly multi-host) arrays go to Orbax as they are; the copies keep the
    # record valid while the next chunk donates the state's buffers.
    rows = self._rows
    record = dict(
        step=jnp.copy(state.step),
        diverged_at=state.diverged_at[rows],
        train_probs=evaluation.train_probs[rows].astype(self._dtype),
        test_probs=evaluation.test_probs[rows].astype(self._dtype),
        **{k: getattr(evaluation, k)[rows] for k in METRICS})
    self._records.save(index, args=ocp.args.Composite(
        **{RECORD_ITEM: ocp.args.StandardSave(record)}))

  def write_state(self, step: int, state: train_lib.CohortState) -> None:
    """Saves the resumable ``state`` under its training ``step`` (asynchronously).

    Waits for the records' pending writes first: resuming starts after the latest state, so
    a state on disk must imply every record up to its time is (a kill between the two
    commits would otherwise lose that record for good).
    """
    self._records.wait_until_finished()
    self._state.save(step, args=ocp.args.Composite(
        **{STATE_ITEM: ocp.args.StandardSave(state)}))

  def restore_state(self, key: int, target: train_lib.CohortState) -> train_lib.CohortState:
    """Restores the state saved under ``key`` onto ``target``'s shapes and shardings."""
    restored = self._state.restore(key, args=ocp.args.Composite(
        **{STATE_ITEM: ocp.args.StandardRestore(target)}))
    return restored[STATE_ITEM]

  def close(self) -> None:
    """Waits for pending writes and closes the managers."""
    for manager in (self._records, self._state):
      manager.wait_until_finished()
      manager.close()


METRICS = ('train_loss', 'train_accuracy', 'test_loss', 'test_accuracy')
# Every array of one record (see ``CohortWriter.write_record``).
RECORD_KEYS = ('step', 'diverged_at', 'train_probs', 'test_probs') + METRICS
