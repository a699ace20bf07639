"""Shared fixtures."""

import fcntl
import os
import shutil
import signal
import tempfile

import numpy as np
import pytest

# One compilation cache for this test session (and the processes it starts, pytest-xdist's
# workers included), not the user's: set before JAX reads its config, so ``train_and_record``
# keeps it (a folder chosen in JAX's config wins over ``config.train.compilation_cache_dir``).
# Tests that train the same small programs then load them instead of compiling them again.
# Removed at the end by the process that made it; a JAX_COMPILATION_CACHE_DIR set by the user
# is used as it is and kept.
_SESSION_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _SESSION_CACHE = tempfile.mkdtemp(prefix='jax_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _SESSION_CACHE

# A session started in the background by a non-interactive shell (as CI may start it) ignores
# SIGINT, and an ignored signal stays ignored in the processes it starts: the Ctrl-C tests need
# Python's own handler, here and in their subprocesses (which get the default back on exec).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)

import ensembles  # noqa: E402

# As the launchers and notebooks do, before JAX starts: one device per CPU core, so the tests
# shard members over several devices.
ensembles.use_cpu_cores()

from ensembles.training import data  # noqa: E402


def pytest_unconfigure(config):
  """Removes the session's compilation cache (in pytest-xdist's controller, after its workers)."""
  del config
  if _SESSION_CACHE:
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
  """A fresh TFDS data_dir with every embedded dataset prepared, once per test session.

  Under pytest-xdist the workers share one, in the session's temporary folder: the first to
  ask prepares it while the others wait on ``prepare_dataset``'s lock. Pass it as `data_dir=`
  to `data.load_dataset`; tests must not write into it.
  """
  if os.environ.get('PYTEST_XDIST_WORKER'):
    path = str(tmp_path_factory.getbasetemp().parent / 'tensorflow_datasets')
  else:
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


def _d_b_numpy(p_NxC: np.ndarray, q_NxC: np.ndarray) -> float:
  """Intensive Bhattacharyya distance in float64 NumPy (independent of analysis.distances)."""
  p, q = np.asarray(p_NxC, np.float64), np.asarray(q_NxC, np.float64)
  return float(-np.mean(np.log(np.sum(np.sqrt(p * q), axis=-1))))


@pytest.fixture(scope='session')
def d_b_numpy():
  """``d_b_numpy(p_NxC, q_NxC)``: the intensive Bhattacharyya distance in float64 NumPy, a
  reference independent of ``ensembles.analysis.distances``."""
  return _d_b_numpy


def locked_by_another(path: str) -> bool:
  """Whether ``path`` holds an exclusive flock taken through another open file (flock conflicts
  between two open files of one process too, so this sees a lock held by this process)."""
  fd = os.open(path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return False
  except BlockingIOError:
    return True
  finally:
    os.close(fd)


@pytest.fixture
def is_locked():
  """``locked_by_another``, for tests of the workdir lock."""
  return locked_by_another
