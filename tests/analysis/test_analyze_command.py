"""ensembles-analyze on stores written by TrajectoryWriter, alone and with a trainer store."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd

from ensembles import store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _analyze(*flags):
  return subprocess.run([sys.executable, '-m', 'ensembles.launch.analyze', *flags], cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                        timeout=600)


def _written(workdir, fake, splits):
  """The fake's arrays through TrajectoryWriter, hparams without 'arch', on ``splits``."""
  members = [dict(lr=hp['learning_rate'], seed=hp['seed']) for hp in fake.members]
  labels = {name: fake.labels(source) for name, source in splits.items()}
  with store.TrajectoryWriter(workdir, members, labels, fake.probs().shape[-1],
                              probe_indices={s: np.arange(len(y)) for s, y in labels.items()}
                              ) as writer:
    for t, epoch in enumerate(fake.epochs):
      for name, source in splits.items():
        writer.write(None, 10 * t, name, fake.probs(source)[:, t], epoch=epoch)
  return workdir


def test_analyze_maps_a_written_store_and_a_joint_one(fake_store, stored, tmp_path):
  fake = fake_store(num_times=4, archs=('mlp',))
  written = _written(str(tmp_path / 'written'), fake, {'train': 'train', 'val': 'test'})
  trained = stored(fake, str(tmp_path / 'trained'))
  done = _analyze(f'--workdir={trained},{written}', f'--outdir={tmp_path}/joint')
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'ES_1' in done.stdout
  # Coloured by store by default; each member once per store, twins in the same place.
  assert os.path.exists(tmp_path / 'joint' / 'embedding_2d_by_store.png')
  points = pd.read_parquet(tmp_path / 'joint' / 'map' / 'points')
  num = len(fake.members)
  xy = points.sort_values(['member', 'time'])[['x1', 'x2']].to_numpy().reshape(2, num, -1, 2)
  np.testing.assert_allclose(xy[0], xy[1], atol=1e-6)
  alone = _analyze(f'--workdir={written}', '--split=val')
  assert alone.returncode == 0, alone.stderr[-3000:]
  assert os.path.exists(tmp_path / 'written' / 'analysis' / 'embedding_2d_by_lr.png')


def test_analyze_checks_stores_and_flags_before_reading(fake_store, stored, tmp_path):
  fake = fake_store(num_times=3, archs=('mlp',))
  written = _written(str(tmp_path / 'written'), fake, {'train': 'train'})
  trained = stored(fake, str(tmp_path / 'trained'))
  for flags, message in (
      ([f'--workdir={trained},{written}'], 'say where their joint analysis goes with --outdir'),
      ([f'--workdir={trained},{written}', f'--outdir={tmp_path}/j', '--split=test'],
       r"--split='test': accepted ['train']"),
      ([f'--workdir={written}', '--color_by=arch'], "--color_by='arch': accepted one of "
       "['lr', 'seed']"),
  ):
    done = _analyze(*flags)
    assert done.returncode == 2 and done.stderr.startswith('error: '), done.stderr[-2000:]
    assert message in done.stderr and 'Traceback' not in done.stderr
    assert not done.stderr.startswith('error: UsageError')  # The message alone.
  other = fake_store(num_times=3, archs=('mlp',), rng_seed=3)
  relabelled = _written(str(tmp_path / 'other'), other, {'train': 'train'})
  done = _analyze(f'--workdir={written},{relabelled}', f'--outdir={tmp_path}/j')
  assert done.returncode == 2 and 'their probes are not the same samples' in done.stderr


def test_the_default_colouring_is_a_key_that_varies():
  from ensembles.launch import analyze  # pylint: disable=import-outside-toplevel
  same_arch = [dict(arch='mlp', width=32, seed=0), dict(arch='mlp', width=128, seed=0)]
  assert analyze.color_key(same_arch, None, 'x') == 'width'
  assert analyze.color_key([dict(hp, arch=a) for hp, a in zip(same_arch, 'ab')], None,
                           'x') == 'arch'
  joint = [dict(hp, store=s) for hp, s in zip(same_arch, ('a', 'b'))]
  assert analyze.color_key(joint, None, 'x') == 'store'
  assert analyze.color_key(same_arch, 'seed', 'x') == 'seed'  # Asked: used even if constant.
