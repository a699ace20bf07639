"""TrajectoryWriter: stores written from NumPy, read back by load_trajectories."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ensembles import store
from ensembles.store import members as layout

E, T, N, N_TEST, C = 3, 4, 6, 4, 5


def _arrays(seed=0):
  rng = np.random.default_rng(seed)
  probs = {'train': rng.dirichlet(np.full(C, 0.5), (E, T, N)),
           'test': rng.dirichlet(np.full(C, 0.5), (E, T, N_TEST))}
  labels = {'train': rng.integers(0, C, N), 'test': rng.integers(0, C, N_TEST)}
  return probs, labels


MEMBERS = [dict(lr=0.1, seed=0), dict(lr=0.2, seed=0), dict(lr=0.1, seed=1)]


def _write_all(workdir, probs, labels, **kwargs):
  with store.TrajectoryWriter(workdir, MEMBERS, labels, C, **kwargs) as writer:
    for t in range(T):
      for m in range(E):
        writer.write(m, 10 * t, 'train', probs['train'][m, t], epoch=t / 2)
      writer.write(None, 10 * t, 'test', probs['test'][:, t], epoch=t / 2)


def test_a_written_store_reads_back_with_metrics_from_numpy(tmp_path):
  probs, labels = _arrays()
  _write_all(str(tmp_path), probs, labels)
  traj = store.load_trajectories(str(tmp_path))
  assert traj.members == MEMBERS and traj.num_classes == C and traj.splits == ('train', 'test')
  assert traj.time_unit == 'epoch' and traj.missing == [] and traj.recorded.all()
  np.testing.assert_array_equal(traj.epochs, [0, 0.5, 1, 1.5])
  np.testing.assert_array_equal(traj.steps, np.tile([0, 10, 20, 30], (E, 1)))
  for split in ('train', 'test'):
    np.testing.assert_array_equal(traj.labels(split), labels[split])
    np.testing.assert_array_equal(traj.probs(split), probs[split].astype(np.float32))
    # Metrics: float64 NumPy on the stored float32 values.
    p = probs[split].astype(np.float32).astype(np.float64)
    picked = np.take_along_axis(p, labels[split][None, None, :, None], -1)[..., 0]
    np.testing.assert_allclose(traj.metrics[f'{split}_loss'], -np.log(picked).mean(-1),
                               rtol=1e-6)
    np.testing.assert_array_equal(traj.metrics[f'{split}_accuracy'],
                                  (p.argmax(-1) == labels[split]).mean(-1).astype(np.float32))
  assert traj.probe_indices('train') is None
  members, times = np.array([2, 0, 1]), np.array([3, 0, 2])
  np.testing.assert_array_equal(traj.read_points('test', members, times),
                                probs['test'][members, times].astype(np.float32))


def test_log_probs_and_logits_become_the_same_probabilities(tmp_path):
  probs, labels = _arrays()
  p = probs['train'][0, 0]
  logits = np.log(p) + 3.7  # Softmax is shift-invariant.
  for kind, values, step in (('probs', p, 0), ('log_probs', np.log(p), 1), ('logits', logits, 2)):
    with store.TrajectoryWriter(str(tmp_path), MEMBERS, {'train': labels['train']}, C) as w:
      w.write(0, step, 'train', values, kind=kind)
  traj = store.load_trajectories(str(tmp_path))
  assert traj.time_unit == 'step'
  np.testing.assert_allclose(traj.probs()[0], np.stack([p] * 3), rtol=1e-6)


def test_members_on_their_own_steps_share_one_grid(tmp_path):
  probs, labels = _arrays()
  with store.TrajectoryWriter(str(tmp_path), MEMBERS, {'train': labels['train']}, C,
                              dtype='float16') as writer:
    writer.write(0, 0, 'train', probs['train'][0, 0])
    writer.write(0, 100, 'train', probs['train'][0, 1])
    writer.write(1, 50, 'train', probs['train'][1, 0])
    writer.write([2, 1], 100, 'train', probs['train'][[2, 1], 2])
  traj = store.load_trajectories(str(tmp_path))
  np.testing.assert_array_equal(traj.epochs, [0, 50, 100])
  np.testing.assert_array_equal(traj.recorded, [[1, 0, 1], [0, 1, 1], [0, 0, 1]])
  np.testing.assert_array_equal(traj.steps, [[0, -1, 100], [-1, 50, 100], [-1, -1, 100]])
  np.testing.assert_array_equal(traj.read_points('train', [1, 2], [2, 2]),
                                probs['train'][[1, 2], 2].astype(np.float16))


def _bad_calls(labels):
  p = np.full((N, C), 1 / C)
  bad_sum = p.copy()
  bad_sum[2] *= 0.9
  negative = p.copy()
  negative[3, 1], negative[3, 2] = -0.1, 0.3
  nan = p.copy()
  nan[4, 0] = np.nan
  return [
      (dict(member=0, values=bad_sum), r'member 0, split .train., step 5, probe 2: the '
       r'probabilities sum to 0\.9; \|sum - 1\| must be <= 0\.001'),
      (dict(member=1, values=negative), r'member 1, .*probe 3: class 1 is -0\.1'),
      (dict(member=2, values=nan), r'member 2, .*probe 4: class 0 is nan'),
      (dict(member=0, values=np.log(p)), r"look like log-probabilities: pass kind='log_probs'"),
      (dict(member=0, values=p, kind='log_probs'), r"log-probabilities are <= 0 \(pass kind='probs'"),
      (dict(member=0, values=p, kind='softmax'), r"kind='softmax': accepted"),
      (dict(member=3, values=p), r'member 3: accepted an index 0..2'),
      (dict(member=0, values=p, split='val'), r"split 'val' is not one of .*'train', 'test'"),
      (dict(member=0, values=p[:-1]), r'shape \(5, 5\).*expected numbers of shape \(6, 5\)'),
      (dict(member=None, values=p), r'shape \(6, 5\).*expected .* \(3, 6, 5\)'),
      (dict(member=0, values=p, step=-1), r'step=-1: an integer >= 0'),
      (dict(member=0, values=p, epoch=float('nan')), r'epoch=nan'),
  ]


def test_bad_values_are_refused_before_anything_is_written(tmp_path):
  _, labels = _arrays()
  with store.TrajectoryWriter(str(tmp_path), MEMBERS, labels, C) as writer:
    for call, message in _bad_calls(labels):
      args = dict(dict(step=5, split='train', kind='probs'), **call)
      with pytest.raises(store.StoreError, match=message):
        writer.write(args.pop('member'), args.pop('step'), args.pop('split'),
                     args.pop('values'), **args)
  for m in range(E):
    assert not os.path.exists(os.path.join(layout.member_dir(str(tmp_path), m), 'train.zarr'))
    assert layout.read_index(layout.index_path(str(tmp_path), m)) == ([], 0)


def test_a_checkpoint_is_written_once(tmp_path):
  probs, labels = _arrays()
  p = probs['train'][0, 0]
  with store.TrajectoryWriter(str(tmp_path), MEMBERS, labels, C) as writer:
    writer.write(0, 7, 'train', p, epoch=1.0)
    writer.write(0, 7, 'train', p, epoch=1.0)  # The same again: a no-op.
    with pytest.raises(store.StoreError, match='step 7 was written before with other values'):
      writer.write(0, 7, 'train', probs['train'][0, 1], epoch=1.0)
    with pytest.raises(store.StoreError, match='give epochs at every checkpoint'):
      writer.write(0, 8, 'train', p)
    with pytest.raises(store.StoreError, match='epoch 1.0 is already step 7'):
      writer.write(0, 9, 'train', p, epoch=1.0)
    with pytest.raises(store.StoreError, match="split 'train' has this step at epoch 1.0"):
      writer.write(0, 7, 'test', probs['test'][0, 0], epoch=2.0)
  entries, _ = layout.read_index(layout.index_path(str(tmp_path), 0))
  assert [(e.split, e.step) for e in entries] == [('train', 7)]
  # A checkpoint on one split only is not a point yet: it is listed as missing.
  traj = store.load_trajectories(str(tmp_path))
  assert traj.missing == [(0, 7)] and not traj.recorded.any()


def test_bad_arguments_and_another_store_are_refused(tmp_path):
  _, labels = _arrays()
  cases = [
      (dict(members=[]), 'members: a non-empty list'),
      (dict(members=[dict(lr=np.float32(0.1))] * E), r'members\[0\] is not JSON'),
      (dict(labels={'train': labels['train'] + C}), r"labels\['train'\] holds 5\.\.9"),
      (dict(labels={'train/x': labels['train']}), "split name 'train/x'"),
      (dict(num_classes=1), 'num_classes=1'),
      (dict(dtype='float64'), "dtype='float64'"),
      (dict(probe_indices={'test': np.arange(3)}), r"probe_indices\['test'\]: shape \(3,\)"),
  ]
  for change, message in cases:
    args = dict(workdir=str(tmp_path / 'new'), members=MEMBERS, labels=labels, num_classes=C)
    with pytest.raises(store.StoreError, match=message):
      store.TrajectoryWriter(**dict(args, **change))
  assert not os.path.exists(tmp_path / 'new')
  store.TrajectoryWriter(str(tmp_path / 'a'), MEMBERS, labels, C).close()
  with pytest.raises(store.StoreError, match=r"differs at \['members'\]\[1\]\['lr'\] "
                                             r'\(0.2 vs 0.3\)'):
    store.TrajectoryWriter(str(tmp_path / 'a'), [MEMBERS[0], dict(lr=0.3, seed=0), MEMBERS[2]],
                           labels, C)
  store.write_manifest(str(tmp_path / 'trained'), dict(members=MEMBERS))  # Format 1.
  with pytest.raises(store.StoreError, match='written by the trainer'):
    store.TrajectoryWriter(str(tmp_path / 'trained'), MEMBERS, labels, C)
  os.makedirs(tmp_path / 'full')
  open(tmp_path / 'full' / 'notes.txt', 'w').close()
  with pytest.raises(store.StoreError, match='is not empty'):
    store.TrajectoryWriter(str(tmp_path / 'full'), MEMBERS, labels, C)


def test_a_member_is_written_by_one_writer_at_a_time(tmp_path):
  probs, labels = _arrays()
  with store.TrajectoryWriter(str(tmp_path), MEMBERS, labels, C) as first:
    first.write(0, 0, 'train', probs['train'][0, 0])
    with store.TrajectoryWriter(str(tmp_path), MEMBERS, labels, C) as second:
      second.write(1, 0, 'train', probs['train'][1, 0])  # Another member: fine.
      with pytest.raises(store.StoreError, match='member 0 .* another process'):
        second.write(0, 1, 'train', probs['train'][0, 1])
  with store.TrajectoryWriter(str(tmp_path), MEMBERS, labels, C) as third:  # Locks released.
    third.write(0, 1, 'train', probs['train'][0, 1])


def test_a_torn_index_line_is_not_a_checkpoint_and_writing_continues(tmp_path):
  probs, labels = _arrays()
  labels = {'train': labels['train']}
  with store.TrajectoryWriter(str(tmp_path), MEMBERS, labels, C) as writer:
    writer.write(0, 0, 'train', probs['train'][0, 0])
  path = layout.index_path(str(tmp_path), 0)
  with open(path, 'a') as f:
    f.write('{"split": "train", "slot": 1, "st')  # A writer killed mid-line.
  assert store.load_trajectories(str(tmp_path)).recorded.sum() == 1
  with store.TrajectoryWriter(str(tmp_path), MEMBERS, labels, C) as writer:
    writer.write(0, 1, 'train', probs['train'][0, 1])
  traj = store.load_trajectories(str(tmp_path))
  np.testing.assert_array_equal(traj.probs()[0], probs['train'][0, :2].astype(np.float32))
  assert all(json.loads(line) for line in open(path))


_KILLED_WRITER = textwrap.dedent('''
    import os, signal, sys
    import numpy as np
    from ensembles.store import TrajectoryWriter
    workdir, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), (2, 40, 6))
    members = [dict(seed=0), dict(seed=1)]
    with TrajectoryWriter(workdir, members, {'train': np.arange(6) % 5}, 5) as writer:
      for step in range(40):
        for m in (first,) if first >= 0 else (0, 1):
          writer.write(m, step, 'train', probs[m, step])
        if step + 1 == count:
          os.kill(os.getpid(), signal.SIGKILL)
    print(sorted(m for m in sys.modules if m.split('.')[0] in
                 ('jax', 'flax', 'optax', 'tensorflow_datasets', 'orbax')))
''')


def _writer_process(workdir, first, count):
  return subprocess.Popen([sys.executable, '-c', _KILLED_WRITER, workdir, str(first), str(count)],
                          stdout=subprocess.PIPE, text=True)


def test_killed_writer_loses_nothing_committed_and_processes_share_a_store(tmp_path):
  expected = np.random.default_rng(0).dirichlet(np.ones(5), (2, 40, 6)).astype(np.float32)
  workdir = str(tmp_path)
  killed = _writer_process(workdir, -1, 13)
  assert killed.wait() == -signal.SIGKILL
  traj = store.load_trajectories(workdir)
  np.testing.assert_array_equal(traj.probs()[:, :13], expected[:, :13])
  # Two processes continue the store at once, one member each, without JAX or Flax.
  writers = [_writer_process(workdir, m, 0) for m in (0, 1)]
  outputs = [w.communicate()[0] for w in writers]
  assert [w.returncode for w in writers] == [0, 0] and outputs == ['[]\n', '[]\n']
  np.testing.assert_array_equal(store.load_trajectories(workdir).probs(), expected)
