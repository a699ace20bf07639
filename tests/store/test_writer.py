"""Tests of ensembles.store.writer: records and states through Orbax, without the trainer."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from ensembles import store


def _record(members: int, step: int, n: int = 6, c: int = 3, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  probs = lambda: rng.dirichlet(np.ones(c), size=(members, n)).astype(np.float32)  # noqa: E731
  return dict(step=np.int32(step), diverged_at=np.full(members, -1, np.int32),
              train_probs=probs(), test_probs=probs(),
              **{k: rng.random(members).astype(np.float32) for k in store.METRICS})


@pytest.mark.parametrize('dtype', store.STORAGE_DTYPES)
def test_records_round_trip_without_padding_members(tmp_path, dtype):
  directory = str(tmp_path / 'cohort')
  writer = store.CohortWriter(directory, dtype, num_members=3)
  written = [_record(members=4, step=10 * t, seed=t) for t in range(2)]  # One padding member.
  for t, record in enumerate(written):
    writer.write_record(t, record)
  writer.close()
  assert store.CohortWriter(directory, dtype, 3).recorded() == {0, 1}
  for t, record in enumerate(written):
    read = store.read_record(directory, t)
    assert int(read['step']) == 10 * t
    assert read['train_probs'].dtype == np.dtype(dtype) and read['train_probs'].shape == (3, 6, 3)
    np.testing.assert_array_equal(read['train_probs'],
                                  record['train_probs'][:3].astype(dtype))
    np.testing.assert_array_equal(read['test_accuracy'], record['test_accuracy'][:3])


def test_a_state_waits_for_the_records_and_restores_exactly(tmp_path):
  directory = str(tmp_path / 'cohort')
  writer = store.CohortWriter(directory, 'float32', num_members=2)
  writer.write_record(0, _record(2, 0))
  state = dict(step=np.asarray(7, np.int32), weights=np.arange(6, dtype=np.float32).reshape(2, 3))
  writer.write_state(7, state)
  writer.close()
  reopened = store.CohortWriter(directory, 'float32', num_members=2)
  assert reopened.latest_state_step() == 7 and reopened.recorded() == {0}
  restored = reopened.restore_state(7, state)
  np.testing.assert_array_equal(restored['weights'], state['weights'])
  reopened.close()


def test_a_record_without_every_array_is_refused(tmp_path):
  writer = store.CohortWriter(str(tmp_path), 'float32', num_members=2)
  record = _record(2, 0)
  del record['test_loss']
  with pytest.raises(store.StoreError, match='a record holds exactly'):
    writer.write_record(0, record)
  writer.close()
  assert writer.recorded() == set()


def test_an_unknown_storage_dtype_is_refused(tmp_path):
  with pytest.raises(store.StoreError, match='accepted'):
    store.CohortWriter(str(tmp_path), 'bfloat16', num_members=2)


def test_a_state_on_disk_implies_its_records_are(tmp_path):
  """Resuming starts after the latest state: its records must have been committed before it.

  Records much larger than the state commit later when both are written asynchronously;
  without the ordering every one of these records was still uncommitted when its state was.
  """
  members = 64
  writer = store.CohortWriter(str(tmp_path), 'float32', members)
  probs = jnp.asarray(np.random.default_rng(0).random((members, 20_000, 10), np.float32))
  # Device arrays, as the trainer's records are (``training.loop.record_arrays``).
  record = dict(step=jnp.int32(5), diverged_at=jnp.full(members, -1), train_probs=probs,
                test_probs=probs[:, :100], **{k: jnp.zeros(members) for k in store.METRICS})
  uncommitted = []
  for t in range(5):
    writer.write_record(t, record)
    writer.write_state(t, dict(w=jnp.zeros(3)))
    writer._state.wait_until_finished()  # The state is on disk: a kill here ...
    if not os.path.isdir(tmp_path / 'records' / str(t)):  # ... must find its record there.
      uncommitted.append(t)
  writer.close()
  assert uncommitted == []


def _state_dirs(directory) -> list[str]:
  return sorted(os.listdir(os.path.join(directory, 'state')))


def test_a_state_is_deleted_only_once_a_newer_one_is_committed(tmp_path, monkeypatch):
  """A save that fails (a full disk, a process ended inside it) leaves the state before it:
  a rerun resumes there."""
  import orbax.checkpoint as ocp

  directory = str(tmp_path / 'cohort')
  state = dict(w=np.arange(3, dtype=np.float32))
  writer = store.CohortWriter(directory, 'float32', num_members=2)
  writer.write_state(1, state)
  writer.close()

  async def fail(*args, **kwargs):
    raise OSError('no space left on device')

  writer = store.CohortWriter(directory, 'float32', num_members=2)
  with monkeypatch.context() as patch:  # The array writes fail, in Orbax's own thread.
    patch.setattr(ocp.type_handlers.NumpyHandler, 'serialize', fail)
    with pytest.raises(OSError, match='no space'):
      writer.write_state(2, state)
      writer.close()
  committed = [d for d in _state_dirs(directory) if d.isdigit()]
  assert committed == ['1'], _state_dirs(directory)
  writer = store.CohortWriter(directory, 'float32', num_members=2)  # The rerun's.
  assert writer.latest_state_step() == 1
  writer.write_state(3, state)
  writer.close()
  assert _state_dirs(directory) == ['3']


def test_states_left_by_a_kill_between_commit_and_deletion_go_at_the_next_write(tmp_path):
  import shutil

  directory = str(tmp_path / 'cohort')
  state = dict(w=np.arange(3, dtype=np.float32))
  writer = store.CohortWriter(directory, 'float32', num_members=2)
  writer.write_state(5, state)
  writer.close()
  shutil.copytree(os.path.join(directory, 'state', '5'), os.path.join(directory, 'state', '4'))
  writer = store.CohortWriter(directory, 'float32', num_members=2)
  assert writer.latest_state_step() == 5
  writer.close()
  assert _state_dirs(directory) == ['5']
