"""analyze_trajectories end to end on a synthetic store, and the launch script around it."""

import csv
import os

import numpy as np
import pytest

from ensembles import analysis

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def test_end_to_end_writes_arrays_tables_and_pictures(fake_store, tmp_path):
  store = fake_store(diverged=3)
  outdir = str(tmp_path / 'analysis')
  summary = analysis.analyze_trajectories(store, outdir, split='train', color_by='arch')

  ok = [e for e in range(len(store.members)) if e != 3]
  assert summary.dropped == (3,) and summary.members == tuple(ok)
  assert summary.num_points == summary.total_points == len(ok) * len(store.epochs)
  with np.load(os.path.join(outdir, 'embedding.npz')) as z:
    k = z['eigenvalues'].shape[0]
    assert z['coords'].shape == (summary.num_points, k) and k >= 5
    assert np.all(np.diff(z['explained_stress']) >= -1e-12)
    assert 0 < z['explained_stress'][-1] <= 1
    np.testing.assert_array_equal(np.unique(z['member']), ok)
    np.testing.assert_array_equal(np.unique(z['epoch']), store.epochs)
    assert z['geodesic_coords'].shape == (len(z['geodesic_t']), k)
    # Progress of each embedded point, from its member and checkpoint.
    expected = analysis.progress(store.probs('train')[z['member'], z['checkpoint']],
                                 store.labels('train'))
    np.testing.assert_allclose(z['progress'], expected, atol=1e-6)
  with np.load(os.path.join(outdir, 'equal_progress.npz')) as z:
    assert z['tube_width'].shape == (len(ok), len(z['grid']))
    assert z['pair_distances'].shape == (len(ok), len(ok))
  with open(os.path.join(outdir, 'factors.csv')) as f:
    rows = list(csv.DictReader(f))
  assert {r['factor'] for r in rows} >= {'arch', 'learning_rate', 'seed'}
  for name in ('embedding_2d.png', 'embedding_3d.png', 'explained_stress.png'):
    with open(os.path.join(outdir, name), 'rb') as f:
      assert f.read(8) == PNG_MAGIC, name
  with open(os.path.join(outdir, 'embedding_3d.html')) as f:
    assert 'plotly' in f.read(200_000).lower()
  assert {os.path.basename(p) for p in summary.files} == set(os.listdir(outdir))
  text = '\n'.join(summary.lines())
  assert 'Dropped 1 diverged member(s): [3]' in text
  assert all(f'ES_{k}=' in text for k in range(1, 6))


def test_subsample_is_reported(fake_store, tmp_path):
  store = fake_store()
  summary = analysis.analyze_trajectories(store, str(tmp_path), color_by='learning_rate',
                                          max_points=20, grid_size=3)
  assert summary.num_points <= 20 < summary.total_points
  assert any(line.startswith('Subsample:') for line in summary.lines())
  with np.load(os.path.join(str(tmp_path), 'embedding.npz')) as z:
    assert len(z['member']) == summary.num_points


def test_bad_requests_raise_value_error(fake_store, tmp_path):
  store = fake_store()
  with pytest.raises(ValueError, match=r"color_by='colour'.*accepted: \['arch'"):
    analysis.analyze_trajectories(store, str(tmp_path), color_by='colour')
  store.status = ['diverged'] * len(store.members)
  with pytest.raises(ValueError, match='all 8 members diverged'):
    analysis.analyze_trajectories(store, str(tmp_path))


def test_nan_in_a_member_marked_ok_is_refused(fake_store, tmp_path):
  store = fake_store(diverged=2)
  store.status[2] = 'ok'
  with pytest.raises(ValueError, match=r'member 2 has status "ok" but NaN'):
    analysis.analyze_trajectories(store, str(tmp_path))


def test_launch_script_prints_explained_stress(fake_store, tmp_path, monkeypatch, capsys):
  from absl.testing import flagsaver

  from ensembles import store
  from ensembles.launch import analyze
  monkeypatch.setattr(store, 'load_trajectories', lambda workdir: fake_store())
  with flagsaver.flagsaver():
    analyze.FLAGS(['analyze', f'--workdir={tmp_path}', '--max_points=30'])
    analyze.main(['analyze'])
  out = capsys.readouterr().out
  assert 'ES_1=' in out and 'ES_5=' in out and 'Subsample:' in out
  assert os.path.exists(tmp_path / 'analysis' / 'embedding.npz')
