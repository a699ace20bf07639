"""import_arrays: stores built from .npy, .npz, HDF5 and Zarr arrays, read back equal."""

import json
import os
import pickle
import re
import sys

import numpy as np
import pytest
import tensorstore as ts

from ensembles import store
from ensembles.store import importing

E, T, N, N_TEST, C = 3, 4, 6, 5, 4
HPARAMS_CSV = 'lr,seed,name,augment\n0.1,0,a,true\n0.2,0,b,false\n0.1,1,c,\n'
# What the CSV above reads as: numbers, text, booleans, an empty cell as null.
MEMBERS = [dict(lr=0.1, seed=0, name='a', augment=True),
           dict(lr=0.2, seed=0, name='b', augment=False),
           dict(lr=0.1, seed=1, name='c', augment=None)]


def _arrays(seed=0):
  """float32 probabilities (E, T, N, C) per split, and their labels."""
  rng = np.random.default_rng(seed)
  probs = {'train': rng.dirichlet(np.full(C, 0.5), (E, T, N)).astype(np.float32),
           'test': rng.dirichlet(np.full(C, 0.5), (E, T, N_TEST)).astype(np.float32)}
  labels = {'train': rng.integers(0, C, N), 'test': rng.integers(0, C, N_TEST)}
  return probs, labels


def _zarr_write(path, array, driver):
  spec = {'driver': driver, 'kvstore': {'driver': 'file', 'path': str(path)}}
  out = ts.open(spec, create=True, dtype=ts.float32, shape=array.shape).result()
  out.write(array).result()


def _save(tmp_path, fmt, probs):
  """Writes both splits in ``fmt``; returns split -> PATH[:KEY]."""
  if fmt == 'npy':
    for split, p in probs.items():
      np.save(tmp_path / f'{split}.npy', p)
    return {split: str(tmp_path / f'{split}.npy') for split in probs}
  if fmt in ('npz', 'npz_compressed'):
    (np.savez_compressed if fmt == 'npz_compressed' else np.savez)(tmp_path / 'p.npz', **probs)
    return {split: f'{tmp_path}/p.npz:{split}' for split in probs}
  if fmt == 'hdf5':
    import h5py  # pylint: disable=import-outside-toplevel
    with h5py.File(tmp_path / 'p.h5', 'w') as f:
      for split, p in probs.items():
        f.create_dataset(f'probs/{split}', data=p, chunks=(1,) + p.shape[1:])
    return {split: f'{tmp_path}/p.h5:/probs/{split}' for split in probs}
  for split, p in probs.items():  # Zarr v2 or v3, written with TensorStore.
    _zarr_write(tmp_path / 'p.zarr' / split, p, fmt)
  return {split: f'{tmp_path}/p.zarr:{split}' for split in probs}


@pytest.mark.parametrize('fmt, table', [('npy', 'csv'), ('npz', 'json'),
                                        ('npz_compressed', 'csv'), ('hdf5', 'json'),
                                        ('zarr', 'csv'), ('zarr3', 'jsonl')])
def test_arrays_import_to_a_store_that_reads_them_back(tmp_path, fmt, table):
  probs, labels = _arrays()
  sources = _save(tmp_path, fmt, probs)
  np.save(tmp_path / 'y_train.npy', labels['train'])
  np.savetxt(tmp_path / 'y_test.txt', labels['test'], fmt='%d')
  hparams = tmp_path / f'hparams.{table}'
  if table == 'csv':
    hparams.write_text(HPARAMS_CSV)
  elif table == 'json':
    hparams.write_text(json.dumps(MEMBERS))
  else:
    hparams.write_text(''.join(json.dumps(m) + '\n' for m in MEMBERS))
  steps_ExT = np.array([[0, 10, 20, 30], [0, 15, 30, 45], [5, 10, 20, 40]])
  np.save(tmp_path / 'steps.npy', steps_ExT)
  summary = importing.import_arrays(
      str(tmp_path / 'store'), sources,
      {'train': str(tmp_path / 'y_train.npy'), 'test': str(tmp_path / 'y_test.txt')},
      str(hparams), kind='probs', steps=str(tmp_path / 'steps.npy'), epochs='0,1,2,3')
  assert summary.checkpoints == E * T and not summary.unrecorded and not summary.resumed
  assert not os.path.exists(str(tmp_path / 'store') + importing.STAGING_SUFFIX)
  traj = store.load_trajectories(str(tmp_path / 'store'))
  assert traj.members == MEMBERS and traj.splits == ('train', 'test') and traj.num_classes == C
  assert traj.time_unit == 'epoch' and traj.recorded.all()
  np.testing.assert_array_equal(traj.epochs, [0, 1, 2, 3])
  np.testing.assert_array_equal(traj.steps, steps_ExT)
  for split in probs:
    np.testing.assert_array_equal(traj.labels(split), labels[split])
    np.testing.assert_array_equal(traj.probs(split), probs[split])


def test_log_probs_one_file_per_member_and_nan_checkpoints(tmp_path):
  probs, labels = _arrays()
  log_train = np.log(probs['train'].astype(np.float64))
  log_train[1, 2] = np.nan    # Member 1 did not record checkpoint 2 ...
  log_train[2, 0] = np.nan    # ... member 2 has checkpoint 0 on test only.
  test = probs['test'].copy()
  test[1, 2] = np.nan
  for m in range(E):
    os.makedirs(tmp_path / 'runs' / str(m))
    np.save(tmp_path / 'runs' / str(m) / 'train.npy', log_train[m])
  import h5py  # pylint: disable=import-outside-toplevel
  with h5py.File(tmp_path / 'test.h5', 'w') as f:
    for m in range(E):
      f[f'member{m}'] = np.log(test[m])
  (tmp_path / 'hp.json').write_text(json.dumps(MEMBERS))
  done = []
  summary = importing.import_arrays(
      str(tmp_path / 'store'),
      {'train': [f'{tmp_path}/runs/{m}/train.npy' for m in range(E)],  # A list of files ...
       'test': f'{tmp_path}/test.h5:/member{{m}}'},  # ... or a template (here of HDF5 keys).
      labels, str(tmp_path / 'hp.json'), kind='log_probs', steps=[0, 100, 200, 300],
      block_bytes=1, progress=lambda *a: done.append(a))
  assert done == [(1, E), (2, E), (3, E)]  # One member at a time.
  assert (summary.checkpoints, summary.unrecorded, summary.partial) == (E * T - 2, 1, 1)
  traj = store.load_trajectories(str(tmp_path / 'store'))
  assert traj.time_unit == 'step' and traj.missing == []
  expected = np.ones((E, T), bool)
  expected[1, 2] = expected[2, 0] = False
  np.testing.assert_array_equal(traj.recorded, expected)
  for split, reference in (('train', probs['train']), ('test', probs['test'])):
    got = traj.probs(split)
    np.testing.assert_allclose(got[expected], reference[expected], rtol=1e-6)
    assert np.isnan(got[~expected]).all()


def _inputs(tmp_path):
  """Valid inputs as files: split -> path dicts, the hparams table, kwargs."""
  probs, labels = _arrays()
  for split in probs:
    np.save(tmp_path / f'{split}.npy', probs[split])
    np.save(tmp_path / f'y_{split}.npy', labels[split])
  (tmp_path / 'hp.csv').write_text(HPARAMS_CSV)
  return dict(workdir=str(tmp_path / 'store'),
              probs={s: str(tmp_path / f'{s}.npy') for s in probs},
              labels={s: str(tmp_path / f'y_{s}.npy') for s in probs},
              members=str(tmp_path / 'hp.csv'), kind='probs', epochs=[0, 1, 2, 3])


def _bad_inputs(tmp_path):
  """(change to the valid inputs, expected message) for each bad input."""
  probs, labels = _arrays()
  d = str(tmp_path)
  (tmp_path / 'hp2.csv').write_text('lr\n0.1\n0.2\n')
  (tmp_path / 'ragged.csv').write_text('lr,seed\n0.1,0\n0.2\n0.3,1\n')
  np.save(tmp_path / 'short.npy', probs['train'][:, :, :-1])
  np.save(tmp_path / 't3.npy', probs['test'][:, :3])
  three = probs['test'][..., :3]
  np.save(tmp_path / 'c3.npy', three / three.sum(-1, keepdims=True))
  negative = probs['train'].copy()
  negative[2, 1, 3, :2] = [-0.25, negative[2, 1, 3, :2].sum() + 0.25]
  np.save(tmp_path / 'negative.npy', negative)
  some_nan = probs['train'].copy()
  some_nan[1, 3, 0, 2] = np.nan
  np.save(tmp_path / 'some_nan.npy', some_nan)
  with open(tmp_path / 'p.pkl', 'wb') as f:
    pickle.dump(probs['train'], f)
  np.save(tmp_path / 'objects.npy', np.array([probs['train'], None], dtype=object),
          allow_pickle=True)
  np.savez(tmp_path / 'p.npz', a=probs['train'], b=probs['train'])
  np.save(tmp_path / 'y_big.npy', labels['train'] + C)
  np.save(tmp_path / 'none.npy', probs['train'][:, :0])
  os.makedirs(tmp_path / 'runs')
  for m in range(E + 1):
    np.save(tmp_path / 'runs' / f'{m}.npy', probs['train'][0])
  return [
      (dict(members=f'{d}/hp2.csv'), rf'{d}/hp2.csv has 2 members.*{d}/train.npy has shape '
       r'\(3, 4, 6, 4\) \(3 members'),
      (dict(members=f'{d}/ragged.csv'), r'ragged.csv, line 3 \(member 1\): 1 fields, the header '
       'has 2'),
      (dict(probs={'train': f'{d}/short.npy', 'test': f'{d}/test.npy'}),
       rf'short.npy has N = 5 probes, but its labels \({d}/y_train.npy\) are 6'),
      (dict(probs={'train': f'{d}/train.npy', 'test': f'{d}/t3.npy'}),
       rf't3.npy holds T = 3 checkpoints of C = 4 classes, but .*{d}/train.npy\) T = 4'),
      (dict(probs={'train': f'{d}/train.npy', 'test': f'{d}/c3.npy'}), r'C = 3 classes'),
      (dict(labels={'train': f'{d}/y_big.npy', 'test': f'{d}/y_test.npy'}),
       r"labels of split 'train' .* hold 4\.\.7, but the predictions have C = 4 classes"),
      (dict(labels={'train': f'{d}/y_train.npy'}), r"predictions for \['test', 'train'\], "
       r"labels for \['train'\]"),
      (dict(epochs=[0, 1, 2]), r'epochs: 3 values; accepted \(4,\).* or \(3, 4\)'),
      (dict(epochs=None, steps=np.zeros((2, 4))), r'steps: shape \(2, 4\); accepted'),
      (dict(epochs=None, steps='0,10,15.5,20'), r'steps: 15.5 \(member 0, checkpoint 2\); '
       'steps are integers >= 0'),
      (dict(epochs='0,1,1,2'), r'member 0 has epoch 1 at checkpoints \[1, 2\]'),
      (dict(epochs=None), 'give the checkpoints\' steps or epochs'),
      (dict(probs={'train': f'{d}/none.npy', 'test': f'{d}/test.npy'}),
       r'none.npy has shape \(3, 0, 6, 4\): no checkpoints'),
      (dict(epochs='0,1.2.3,2,3'), r'epochs.*0,1\.2\.3,2,3'),
      (dict(kind='softmax'), r"kind='softmax': accepted probs, log_probs, logits"),
      (dict(probs={'train': f'{d}/negative.npy', 'test': f'{d}/test.npy'}),
       rf"{d}/negative.npy\[2, 1\]: member 2, split 'train', step 1, probe 3: class 0 is -0.25"),
      (dict(probs={'train': f'{d}/some_nan.npy', 'test': f'{d}/test.npy'}),
       r'some_nan.npy\[1, 3\]: member 1, .*probe 0: class 2 is nan'),
      (dict(probs={'train': f'{d}/p.pkl', 'test': f'{d}/test.npy'}),
       r'p.pkl: a pickle \(.pkl\); pickles are never loaded .*docs/IMPORT.md'),
      (dict(probs={'train': f'{d}/objects.npy', 'test': f'{d}/test.npy'}),
       r'objects.npy: .*pickles are never loaded'),
      (dict(probs={'train': f'{d}/missing.h5:/train', 'test': f'{d}/test.npy'}),
       rf"no such file or directory: {d}/missing.h5 \(from '{d}/missing.h5:/train'"),
      (dict(probs={'train': f'{d}/p.npz', 'test': f'{d}/test.npy'}),
       r"p.npz: no key given; it holds \['a', 'b'\]"),
      (dict(probs={'train': f'{d}/p.npz:c', 'test': f'{d}/test.npy'}), r"no array 'c'"),
      (dict(probs={'train': f'{d}/runs/{{m}}.npy', 'test': f'{d}/test.npy'}),
       r'runs/3.npy exists, but .*hp.csv has 3 members'),
  ]


def test_bad_inputs_are_clear_errors_and_leave_nothing(tmp_path):
  good = _inputs(tmp_path)
  for change, message in _bad_inputs(tmp_path):
    try:
      importing.import_arrays(**dict(good, **change))
    except store.StoreError as e:
      assert re.search(message, str(e)), f'{change}: {e}'
    else:
      pytest.fail(f'{change}: imported')
    assert not os.path.exists(good['workdir']), change
    assert not os.path.exists(good['workdir'] + importing.STAGING_SUFFIX), change


def test_hdf5_without_h5py_names_the_extra(tmp_path, monkeypatch):
  good = _inputs(tmp_path)
  import h5py  # pylint: disable=import-outside-toplevel
  with h5py.File(tmp_path / 'p.h5', 'w') as f:
    f['train'] = np.load(good['probs']['train'])
  monkeypatch.setitem(sys.modules, 'h5py', None)  # Importing it raises ImportError.
  with pytest.raises(store.StoreError, match=r"p.h5 is HDF5, which needs h5py: pip install "
                                             r"'ensembles\[hdf5\]'"):
    importing.import_arrays(**dict(good, probs=dict(good['probs'], train=f'{tmp_path}/p.h5')))


def test_a_full_workdir_is_refused_and_an_interrupted_import_continues(tmp_path):
  good = _inputs(tmp_path)
  os.makedirs(good['workdir'])
  (tmp_path / 'store' / 'notes.txt').write_text('mine')
  with pytest.raises(store.StoreError, match='exists and is not empty'):
    importing.import_arrays(**good)
  os.remove(tmp_path / 'store' / 'notes.txt')  # An empty directory is fine.

  def interrupt(done, total):
    if done == 2:
      raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    importing.import_arrays(**good, block_bytes=1, progress=interrupt)
  staging = good['workdir'] + importing.STAGING_SUFFIX
  assert store.load_trajectories(staging).recorded.sum(axis=1).tolist() == [T, T, 0]
  summary = importing.import_arrays(**good)
  assert summary.resumed and summary.checkpoints == E * T and not os.path.exists(staging)
  traj = store.load_trajectories(good['workdir'])
  np.testing.assert_array_equal(traj.probs('train'), np.load(good['probs']['train']))


def test_an_import_running_elsewhere_keeps_its_staging_directory(tmp_path):
  good = _inputs(tmp_path)

  def interrupt(done, total):
    if done == 1:
      raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    importing.import_arrays(**good, block_bytes=1, progress=interrupt)
  staging = good['workdir'] + importing.STAGING_SUFFIX
  probs, labels = _arrays()
  # Another process imports the same arrays now: it holds member 1.
  with store.TrajectoryWriter(staging, MEMBERS, labels, C) as other:
    other.write(1, 0, 'train', probs['train'][1, 0], epoch=0.0)
    with pytest.raises(store.StoreError, match='member 1 .* another process'):
      importing.import_arrays(**good, block_bytes=1)
  assert store.load_trajectories(staging).recorded[0].all()  # Nothing of it deleted.
