"""Shared fixtures."""

import pytest

import ensembles

from ensembles import data


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
  """A fresh TFDS data_dir with every embedded dataset prepared, once per test session.

  Pass it as `data_dir=` to `data.load_dataset`; tests must not write into it.
  """
  path = str(tmp_path_factory.mktemp('tensorflow_datasets'))
  for name in data.EMBEDDED_DATASETS:
    data.prepare_dataset(name, path)
  return path


@pytest.fixture
def small_config(data_dir):
  """A factory of small sweep configs on digits: ``small_config(epochs=1, seed=(0, 1))``.

  16-unit one-layer MLPs, batch 64, probes of 200 train and 100 test examples, no progress
  lines; keyword arguments other than ``epochs`` are sweep fields.
  """
  def make(epochs=1, **sweep):
    config = ensembles.default_config()
    config.data.data_dir = data_dir
    config.hparams.update(dict(width=16, depth=1, epochs=epochs, batch_size=64))
    config.train.log_every_seconds = 1e9
    config.record.train_probe_size = 200
    config.record.test_probe_size = 100
    for name, values in sweep.items():
      config.sweep[name] = values
    return config
  return make
