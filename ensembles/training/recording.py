"""The recording grid: when every member's predictions are recorded.

Recording times are given in epochs so that every cohort of a sweep shares one time grid;
each cohort turns them into its own steps. The default grid (``config.record``) is dense early
and sparse late, always with step 0 and the last step.
"""

from __future__ import annotations

import numpy as np

from ensembles.training.config import RecordConfig


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
