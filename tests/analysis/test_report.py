"""analyze_trajectories end to end on a synthetic store, and the launch script around it."""

import csv
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from ensembles import analysis
from ensembles.analysis import mapping

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
  for name in ('embedding_2d_by_arch.png', 'embedding_3d_by_arch.png', 'explained_stress.png'):
    with open(os.path.join(outdir, name), 'rb') as f:
      assert f.read(8) == PNG_MAGIC, name
  with open(os.path.join(outdir, 'embedding_3d_by_arch.html')) as f:
    assert 'plotly' in f.read(200_000).lower()
  assert {os.path.basename(p) for p in summary.files} == set(os.listdir(outdir))
  text = '\n'.join(summary.lines())
  assert 'Dropped 1 diverged member(s): [3]' in text
  assert all(f'ES_{k}=' in text for k in range(1, 6))


def test_a_subsampled_summary_still_maps_and_draws_every_point(fake_store, tmp_path):
  store = fake_store()
  summary = analysis.analyze_trajectories(store, str(tmp_path), color_by='learning_rate',
                                          max_points=20, grid_size=3, landmarks=30)
  assert summary.num_points == summary.total_points == 64
  assert any(line.startswith('Subsample:') for line in summary.lines())
  assert any(line.startswith('Map: 30 landmarks') for line in summary.lines())
  with np.load(os.path.join(str(tmp_path), 'embedding.npz')) as z:
    assert len(z['member']) <= 20  # summarize's own embedding, for the comparison
  mapped = pd.read_parquet(os.path.join(str(tmp_path), 'map', 'points'))
  assert len(mapped) == 64 and mapped.x1.notna().all() and mapped.landmark.sum() == 30
  es = [float(x.split('=')[1]) for x in summary.lines()[-4].rstrip(',').split(': ')[1].split(', ')]
  np.testing.assert_allclose(es, summary.explained_stress[:5], atol=1e-4)


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


def test_launch_script_maps_a_partial_store_and_prints_what_it_chose(fake_store, stored, tmp_path,
                                                                     capsys):
  from absl.testing import flagsaver

  from ensembles import store
  from ensembles.launch import analyze
  workdir = stored(fake_store(), str(tmp_path / 'store'))
  shutil.rmtree(os.path.join(store.cohort_dir(workdir, 2), 'records', '7'))  # members 6, 7
  with flagsaver.flagsaver(), pytest.warns(UserWarning, match='recording step 7 is missing'):
    analyze.FLAGS(['analyze', f'--workdir={workdir}', '--max_points=30', '--landmarks=20'])
    analyze.main(['analyze'])
  out = capsys.readouterr().out
  assert 'The store is partial: 1 records are missing' in out
  assert 'Map: 62 points on 20 landmarks (--landmarks).' in out
  assert 'Placed 62 of 62 points (100.0%)' in out and 'Left out 2 points: not recorded.' in out
  assert 'ES_1=' in out and 'ES_5=' in out
  assert 'the 7 of 8 recording times recorded for every member' in out
  mapped = pd.read_parquet(os.path.join(workdir, 'analysis', 'map', 'points'))
  assert mapped.x1.isna().sum() == 2 and len(mapped) == 64


def test_the_launcher_chooses_landmarks_above_the_threshold(fake_store, monkeypatch):
  from ensembles.launch import analyze
  traj = fake_store()
  traj.recorded = np.ones((8, 8), bool)
  assert analyze.landmark_choice(traj, None) == (None, 'Map: full InPCA of 64 points (at most '
                                                 f'{mapping.LANDMARK_THRESHOLD:,}: every point '
                                                 'a landmark).')
  monkeypatch.setattr(mapping, 'LANDMARK_THRESHOLD', 50)
  monkeypatch.setattr(mapping, 'DEFAULT_LANDMARKS', 16)
  assert analyze.landmark_choice(traj, None) == (16, 'Map: 64 points, more than 50: landmark '
                                                 'InPCA on 16 landmarks (set --landmarks to '
                                                 'change).')


def test_the_progress_line_reports_the_placement_rate_and_time_left():
  from ensembles.launch import analyze
  now, said = [0.0], []
  line = analyze.ProgressLine(clock=lambda: now[0], say=lambda text, flush: said.append(text))
  for t, done in [(100.0, 0), (105.0, 10), (110.0, 20), (112.0, 100)]:
    now[0] = t
    line(done, 100)
  assert said == ['Placing 100 points...',
                  'Placed 20 of 100 points (20.0%), 2 points/s, 0m40s left',
                  'Placed 100 of 100 points (100.0%), 8 points/s, 0m00s left']


def test_the_launcher_checks_color_by_against_the_manifest_before_reading(fake_store, stored,
                                                                          tmp_path, monkeypatch):
  from absl import app
  from absl.testing import flagsaver

  from ensembles import store
  from ensembles.launch import analyze
  workdir = stored(fake_store(), str(tmp_path / 'store'))
  monkeypatch.setattr(store, 'load_trajectories', lambda *a, **k: pytest.fail('records read'))
  with flagsaver.flagsaver():
    analyze.FLAGS(['analyze', f'--workdir={workdir}', '--color_by=colour'])
    with pytest.raises(app.UsageError, match=r"--color_by='colour': accepted one of \['arch'"):
      analyze.main(['analyze'])


def _hover_of(html_path: str) -> str:
  """The text of an interactive view, with plotly's escaped '<' and '>' read back."""
  with open(html_path) as f:
    return f.read().replace('\\u003c', '<').replace('\\u003e', '>')


def test_each_colouring_keeps_its_pictures_and_the_hover_tells_each_point(fake_store, tmp_path):
  store = fake_store()  # 8 members (arch x learning_rate x seed) x 8 epochs; steps 0, 10, ...
  member_ExT, time_ExT = np.indices((8, 8))
  store.metrics['train_accuracy'] = (10 * member_ExT + time_ExT) / 100
  store.metrics['test_accuracy'] = (10 * member_ExT + time_ExT) / 200
  outdir = str(tmp_path / 'analysis')
  analysis.analyze_trajectories(store, outdir, color_by='arch')
  # Fewer points than the map: the pictures come from the map (each colouring its own path).
  analysis.analyze_trajectories(store, outdir, color_by='seed', max_points=20, grid_size=3)
  written = set(os.listdir(outdir))
  for color_by in ('arch', 'seed'):
    assert {f'embedding_2d_by_{color_by}.png', f'embedding_3d_by_{color_by}.png',
            f'embedding_3d_by_{color_by}.html'} <= written, written
  assert not written & {'embedding_2d.png', 'embedding_3d.png', 'embedding_3d.html'}
  # Member 5 is (cnn, 0.1, seed 1); its 4th point is at epoch 5 * 3 / 7, step 30.
  point = (f'member 5<br>arch=cnn, learning_rate=0.1, seed=1<br>epoch {15 / 7:g}, step 30<br>'
           'train_accuracy=0.530, test_accuracy=0.265')
  for color_by in ('arch', 'seed'):
    html = _hover_of(os.path.join(outdir, f'embedding_3d_by_{color_by}.html'))
    assert point in html, color_by
    # Hparams the same for every member say nothing: left out.
    assert 'dataset=digits' not in html and 'momentum=0.9' not in html

  # A store without steps or metrics (the protocol does not promise them): member and epoch.
  del store.steps, store.metrics
  outdir = str(tmp_path / 'bare')
  analysis.analyze_trajectories(store, outdir, color_by='arch')
  html = _hover_of(os.path.join(outdir, 'embedding_3d_by_arch.html'))
  assert f'member 5<br>arch=cnn, learning_rate=0.1, seed=1<br>epoch {15 / 7:g}"' in html


def test_the_launcher_checks_landmarks_before_reading_records(fake_store, stored, tmp_path,
                                                              monkeypatch):
  from absl import app, flags
  from absl.testing import flagsaver

  from ensembles.launch import analyze
  workdir = stored(fake_store(), str(tmp_path / 'store'))  # 64 points
  monkeypatch.setattr(analysis, 'analyze_trajectories', lambda *a, **k: pytest.fail('read'))
  with flagsaver.flagsaver():
    # Fewer landmarks than the InPCA components kept: refused when the flags are parsed.
    with pytest.raises(flags.IllegalFlagValueError, match='--landmarks=9'):
      analyze.FLAGS(['analyze', f'--workdir={workdir}', '--landmarks=9'])
  with flagsaver.flagsaver():
    analyze.FLAGS(['analyze', f'--workdir={workdir}', '--landmarks=65'])
    with pytest.raises(app.UsageError, match=r'--landmarks=65: more than the 64 points to map '
                       r'.*accepted: 10 to 64'):
      analyze.main(['analyze'])


def test_a_colour_key_that_is_no_file_name_is_made_one():
  from ensembles.analysis import report
  assert report.embedding_file_name(3, 'optimizer/lr rate', 'html') == \
      'embedding_3d_by_optimizer_lr_rate.html'
