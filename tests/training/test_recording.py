"""Tests of ensembles.training.recording: the recording grid in epochs and in steps."""

import numpy as np

from ensembles.configs import common as config_common
from ensembles.training import config as config_lib
from ensembles.training import recording


def test_recording_grid_dense_early_sparse_late():
  cfg = config_lib.RecordConfig(**config_common.default_record_config())
  grid = recording.recording_epochs(23, cfg)
  expected = ([0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75] + list(range(2, 10))
              + [10, 15, 20, 23])
  np.testing.assert_allclose(grid, expected)
  # 22 steps per epoch: quarter epochs round to whole steps; 0 and the last step present.
  steps = recording.recording_steps(grid, 22)
  assert steps[0] == 0 and steps[-1] == 23 * 22
  assert list(steps[:5]) == [0, 6, 11, 16, 22]  # round(5.5) = 6 (banker's: 5.5 -> 6)
  assert np.all(np.diff(steps) > 0)


def test_recording_grid_short_run_and_fractional_epochs():
  cfg = config_lib.RecordConfig(**config_common.default_record_config())
  np.testing.assert_allclose(recording.recording_epochs(1, cfg), [0, 0.25, 0.5, 0.75, 1])
  np.testing.assert_allclose(recording.recording_epochs(12, cfg)[-4:], [8, 9, 10, 12])
