"""Synthetic trajectories stores for the analysis tests (duck-typed ensembles.Trajectories).

Each member walks from near-ignorance through a waypoint set by its architecture to near-truth;
the seed perturbs the waypoint a little and the learning rate only changes how fast the walk
goes. So at equal progress, architecture should separate trajectories and learning rate should
not, much more than a new seed does.
"""

import itertools
from typing import Any

import numpy as np
import pytest

from ensembles import store
from ensembles.analysis import geometry

# Share of the way from an architecture's waypoint toward a seed's random distribution.
_SEED_NOISE = 0.08

# Where the walk ends: this far along the geodesic from ignorance to truth.
_END_PROGRESS = 0.85


class FakeTrajectories:
  """The attributes and methods of ensembles.Trajectories that the analysis reads."""

  def __init__(self, members, epochs, probs, labels, status):
    self.members = members
    self.epochs = epochs
    self.steps = np.tile(np.arange(len(epochs)) * 10, (len(members), 1))
    self._probs = probs
    self._labels = labels
    self.status = status
    shape = (len(members), len(epochs))
    self.metrics = {k: np.zeros(shape, np.float32)
                    for k in ('train_loss', 'train_accuracy', 'test_loss', 'test_accuracy')}

  def probs(self, split: str = 'train') -> np.ndarray:
    return self._probs[split]

  def labels(self, split: str = 'train') -> np.ndarray:
    return self._labels[split]


def _hparams(arch: str, learning_rate: float, seed: int) -> dict[str, Any]:
  return dict(dataset='digits', arch=arch, width=64, depth=2, optimizer='sgd',
              learning_rate=learning_rate, momentum=0.9, nesterov=False, batch_size=64,
              weight_decay=0.0, schedule='cosine', epochs=5, augment=False,
              label_smoothing=0.0, init_scale=1.0, seed=seed, init='default')


def make_store(num_samples: int = 40, num_classes: int = 4, num_times: int = 8,
               archs=('mlp', 'cnn'), learning_rates=(0.1, 0.02), seeds=(0, 1),
               diverged: int | None = None, dtype=np.float32, rng_seed: int = 0):
  """A FakeTrajectories with one member per (arch, learning rate, seed).

  Args:
    diverged: index of a member whose probabilities are NaN from mid-run on and whose status
      is 'diverged' (None for no such member).
  """
  rng = np.random.default_rng(rng_seed)
  members = [_hparams(a, lr, s) for a, lr, s in itertools.product(archs, learning_rates, seeds)]
  epochs = np.linspace(0.0, 5.0, num_times)
  probs, labels = {}, {}
  for split in ('train', 'test'):
    labels_N = rng.integers(0, num_classes, num_samples)
    uniform_NxC = geometry.ignorance(num_samples, num_classes)
    end_NxC = geometry.geodesic(labels_N, num_classes, _END_PROGRESS)[0]
    waypoints = {a: rng.dirichlet(np.ones(num_classes), num_samples) for a in archs}
    out = np.empty((len(members), num_times, num_samples, num_classes), np.float32)
    for e, hp in enumerate(members):
      noise = rng.dirichlet(np.ones(num_classes), num_samples)
      waypoint = geometry.slerp(waypoints[hp['arch']], noise, _SEED_NOISE)
      start = geometry.slerp(uniform_NxC, noise, 0.02)
      # A higher learning rate covers the same path in fewer epochs.
      s_T = 1.0 - (1.0 - np.linspace(0, 1, num_times)) ** (1.0 + 20 * hp['learning_rate'])
      for t, s in enumerate(s_T):
        out[e, t] = (geometry.slerp(start, waypoint, 2 * s) if s < 0.5
                     else geometry.slerp(waypoint, end_NxC, 2 * s - 1))
    probs[split] = out.astype(dtype)
    labels[split] = labels_N
  status = ['ok'] * len(members)
  if diverged is not None:
    for split in probs:
      probs[split][diverged, num_times // 2:] = np.nan
    status[diverged] = 'diverged'
  return FakeTrajectories(members, epochs, probs, labels, status)


def write_store(fake: FakeTrajectories, workdir: str, cohort_size: int = 3) -> str:
  """Writes a FakeTrajectories as a real store through the store's writer; returns workdir.

  Members go to cohorts of ``cohort_size`` in sweep order; a diverged member's NaN
  probabilities are stored as they are, with its divergence at the first NaN.
  """
  num_members, num_times = len(fake.members), len(fake.epochs)
  labels = {s: np.asarray(fake.labels(s)).tolist() for s in ('train', 'test')}
  probes = {f'{s}_{kind}': values for s in labels for kind, values in (
      ('labels', labels[s]), ('indices', list(range(len(labels[s])))))}
  cohorts = [dict(index=c, members=list(range(first, min(first + cohort_size, num_members))))
             for c, first in enumerate(range(0, num_members, cohort_size))]
  store.write_manifest(workdir, dict(members=fake.members, epochs=list(fake.epochs),
                                     num_classes=fake.probs().shape[-1], probes=probes,
                                     cohorts=cohorts))
  finite_ExT = np.isfinite(fake.probs()).all(axis=(2, 3))
  for cohort in cohorts:
    rows = np.asarray(cohort['members'])
    writer = store.CohortWriter(store.cohort_dir(workdir, cohort['index']), 'float32', len(rows))
    for t in range(num_times):
      record = {f'{s}_probs': fake.probs(s)[rows, t] for s in ('train', 'test')}
      record.update({k: v[rows, t] for k, v in fake.metrics.items()},
                    step=np.int64(fake.steps[0, t]),
                    diverged_at=np.where(finite_ExT[rows, :t + 1].all(axis=1), -1,
                                         fake.steps[0, t]))
      writer.write_record(t, record)
    writer.close()
  return workdir


@pytest.fixture
def fake_store():
  """The factory make_store, for tests that need a synthetic trajectories store."""
  return make_store


@pytest.fixture
def stored():
  """``stored(fake, workdir, cohort_size=3)``: write_store, a fake store written for real."""
  return write_store
