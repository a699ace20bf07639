"""Stores written by TrajectoryWriter, and several stores, mapped like trainer stores."""

import numpy as np
import pytest

from ensembles import analysis
from ensembles import store
from ensembles.analysis import distances

K = 4


def _write_copy(fake, workdir, splits=('train', 'test'), indices=True, **kwargs):
  """The fake's arrays recorded through TrajectoryWriter, member by member, with epochs."""
  labels = {s: np.asarray(fake.labels(s)) for s in splits}
  indices = {s: np.arange(len(labels[s])) for s in splits} if indices else None
  with store.TrajectoryWriter(workdir, fake.members, labels, fake.probs().shape[-1],
                              probe_indices=indices, **kwargs) as writer:
    for m in range(len(fake.members)):
      for t, epoch in enumerate(fake.epochs):
        for s in splits:
          writer.write(m, int(fake.steps[m, t]), s, fake.probs(s)[m, t], epoch=epoch)
  return workdir


def test_a_written_store_maps_like_its_arrays(fake_store, tmp_path):
  fake = fake_store(num_times=6)
  written = store.load_trajectories(_write_copy(fake, str(tmp_path)))
  direct = analysis.embed_trajectories(fake, k=K)
  from_store = analysis.embed_trajectories(written, k=K)
  np.testing.assert_allclose(from_store.eigenvalues, direct.eigenvalues, rtol=1e-5)
  # Coordinates up to the sign of each axis, to float32 rounding.
  signs_K = np.sign((from_store.coords * direct.coords).sum(axis=0))
  np.testing.assert_allclose(from_store.coords * signs_K, direct.coords, atol=2e-5)
  np.testing.assert_allclose(from_store.explained_stress, direct.explained_stress, atol=1e-6)


def test_a_store_without_probe_indices_maps_into_an_outdir(fake_store, tmp_path):
  written = store.load_trajectories(_write_copy(fake_store(num_times=3), str(tmp_path / 's'),
                                                indices=False))
  assert written.probe_indices('train') is None
  embedding = analysis.embed_trajectories(written, k=2, outdir=str(tmp_path / 'map'))
  assert np.isfinite(embedding.coords).all()


def test_a_trainer_store_and_its_written_copy_map_jointly_twin_on_twin(fake_store, stored,
                                                                       tmp_path):
  fake = fake_store(num_times=5)
  trained = stored(fake, str(tmp_path / 'trained'))
  copy = _write_copy(fake, str(tmp_path / 'copy'))
  joint = store.load_trajectories([trained, copy])
  num = len(fake.members)
  assert len(joint.members) == 2 * num
  assert [hp['store'] for hp in joint.members] == ['trained'] * num + ['copy'] * num
  assert joint.recorded.all() and joint.time_unit == 'epoch'
  for half in (slice(0, num), slice(num, 2 * num)):  # Each store's points, from its own files.
    np.testing.assert_array_equal(joint.probs()[half], fake.probs())
    np.testing.assert_array_equal(joint.probs('test')[half], fake.probs('test'))
  embedding = analysis.embed_trajectories(joint, k=K)
  coords = embedding.coords.reshape(2, num, len(fake.epochs), K)
  assert np.abs(coords[0] - coords[1]).max() <= 1e-6
  points = joint.probs().reshape(-1, *joint.probs().shape[2:])
  half = len(points) // 2
  twins = distances.bhattacharyya_pairs(points, np.arange(half), np.arange(half) + half)
  assert np.abs(twins).max() <= 1e-6


def test_stores_of_other_probes_or_classes_do_not_map_jointly(fake_store, tmp_path):
  fake = fake_store(num_times=3)
  base = _write_copy(fake, str(tmp_path / 'base'))
  other = fake_store(num_times=3, rng_seed=1)  # Other labels.
  relabelled = _write_copy(other, str(tmp_path / 'relabelled'))
  first = int(np.flatnonzero(fake.labels('train') != other.labels('train'))[0])
  with pytest.raises(store.StoreError, match=(
      rf"stores 'base' and 'relabelled' cannot be mapped jointly: their probes are not the "
      rf"same samples \('train' probe {first}: labels")):
    store.load_trajectories([base, relabelled])
  classes = fake_store(num_times=3, num_classes=5)
  with pytest.raises(store.StoreError, match='4 vs 5 classes'):
    store.load_trajectories([base, _write_copy(classes, str(tmp_path / 'classes'))])
  digests = _write_copy(fake, str(tmp_path / 'digests'),
                        probe_inputs={'train': np.zeros((40, 3))})
  digests_too = _write_copy(fake, str(tmp_path / 'digests_too'),
                            probe_inputs={'train': np.ones((40, 3))})
  store.load_trajectories([base, digests])  # A digest on one side only: labels decide.
  with pytest.raises(store.StoreError, match="'train' probes: input digests"):
    store.load_trajectories([digests, digests_too])
