"""ensembles-import end to end, in fresh processes (as a user runs it)."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np

from ensembles import store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
E, T, N, C = 3, 4, 6, 5
# Run as the console script does, then list the heavy modules the import loaded.
_IMPORT_AND_LIST_MODULES = textwrap.dedent('''
    import sys
    from ensembles.launch import import_arrays
    sys.argv = ['ensembles-import'] + sys.argv[1:]
    try:
      import_arrays.run()
    except SystemExit as e:
      assert not e.code, e.code
    print(sorted(m for m in sys.modules if m.split('.')[0] in
                 ('jax', 'flax', 'optax', 'tensorflow_datasets', 'tensorflow', 'orbax')))
''')


def _python(args, **kwargs):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120, **kwargs)


def _inputs(tmp_path):
  rng = np.random.default_rng(0)
  probs = {'train': rng.dirichlet(np.ones(C), (E, T, N)).astype(np.float32),
           'test': rng.dirichlet(np.ones(C), (E, T, N - 2)).astype(np.float32)}
  np.save(tmp_path / 'train.npy', np.log(probs['train']))
  import h5py  # pylint: disable=import-outside-toplevel
  with h5py.File(tmp_path / 'preds.h5', 'w') as f:
    f['log_probs/test'] = np.log(probs['test'])
  np.savez(tmp_path / 'labels.npz', train=rng.integers(0, C, N), test=rng.integers(0, C, N - 2))
  (tmp_path / 'hparams.csv').write_text('lr,seed\n0.1,0\n0.2,0\n0.1,1\n')
  flags = [f'--workdir={tmp_path}/store', '--kind=log_probs',
           f'--hparams={tmp_path}/hparams.csv', f'--probs=train:{tmp_path}/train.npy',
           f'--probs=test:{tmp_path}/preds.h5:/log_probs/test',
           f'--labels=train:{tmp_path}/labels.npz:train',
           f'--labels=test:{tmp_path}/labels.npz:test', '--epochs=0,0.5,1,2']
  return probs, flags


def test_the_import_command_builds_a_store_without_jax_or_the_trainer(tmp_path):
  probs, flags = _inputs(tmp_path)
  done = _python(['-c', _IMPORT_AND_LIST_MODULES, *flags])
  assert done.returncode == 0, done.stderr[-3000:]
  out = done.stdout.splitlines()
  assert f'Imported {E * T} checkpoints of {E} members (splits: train, test)' in out[-3]
  assert out[-1] == '[]', f'the import loaded {out[-1]}'
  traj = store.load_trajectories(str(tmp_path / 'store'))
  assert traj.members == [dict(lr=0.1, seed=0), dict(lr=0.2, seed=0), dict(lr=0.1, seed=1)]
  np.testing.assert_array_equal(traj.epochs, [0, 0.5, 1, 2])
  for split in probs:  # exp(log p) of float32 p, stored as float32.
    np.testing.assert_allclose(traj.probs(split), probs[split], rtol=1e-6)


def _bad_flags(tmp_path):
  with open(tmp_path / 'preds.pkl', 'wb') as f:
    pickle.dump({}, f)
  (tmp_path / 'two.csv').write_text('lr\n0.1\n0.2\n')
  return [
      ({'--probs=train:': '--probs=train.npy'},
       "error: --probs='train.npy': accepted SPLIT:PATH[:KEY], e.g. --probs=train:train.npy"),
      ({'--kind=': '--kind=softmax'},
       'error: flag --kind=softmax: value should be one of <probs|log_probs|logits>'),
      ({'--probs=train:': f'--probs=train:{tmp_path}/preds.pkl'},
       f"error: predictions of split 'train': {tmp_path}/preds.pkl: a pickle (.pkl); pickles are"
       ' never loaded here'),
      ({'--hparams=': f'--hparams={tmp_path}/two.csv'},
       f'error: {tmp_path}/two.csv has 2 members (one per row), but {tmp_path}/train.npy has '
       'shape (3, 4, 6, 5) (3 members'),
  ]


def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path):
  _, flags = _inputs(tmp_path)
  for change, message in _bad_flags(tmp_path):
    (prefix, replacement), = change.items()
    given = [replacement if f.startswith(prefix) else f for f in flags]
    done = _python(['-m', 'ensembles.launch.import_arrays', *given])
    assert done.returncode == 2 and 'Traceback' not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith(message), done.stderr
    assert not os.path.exists(tmp_path / 'store')
    assert not os.path.exists(f'{tmp_path}/store.importing')


def test_help_lists_the_flags_and_exits_zero():
  done = _python(['-m', 'ensembles.launch.import_arrays', '--help'])
  assert done.returncode == 0, done.stderr[-2000:]
  for flag in ('workdir', 'kind', 'hparams', 'probs', 'labels', 'steps', 'epochs', 'verbose'):
    assert f'  --{flag}' in done.stdout or f'  --[no]{flag}' in done.stdout, flag
