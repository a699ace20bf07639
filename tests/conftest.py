"""Shared fixtures."""

import pytest

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
