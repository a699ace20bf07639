"""Tests of ensembles.analysis.summary: ``summarize`` computes without writing, and agrees with
the report written from it; the equal-progress grid against hand-computed values."""

import os

import numpy as np
import pytest

from ensembles import analysis
from ensembles.analysis import plots
from ensembles.analysis import summary


def test_summarize_writes_nothing_and_is_what_the_report_reports(fake_store, tmp_path,
                                                                  monkeypatch):
  store = fake_store(diverged=3)
  empty = tmp_path / 'cwd'
  empty.mkdir()

  def refuse(*args, **kwargs):
    raise AssertionError('summarize wrote a file')

  with monkeypatch.context() as patch:
    patch.chdir(empty)
    for name in ('plot_embedding', 'plot_explained_stress', 'write_embedding_html'):
      patch.setattr(plots, name, refuse)
    patch.setattr(np, 'savez', refuse)
    computed = summary.summarize(store, split='train')
  assert os.listdir(empty) == []

  ok = [e for e in range(len(store.members)) if e != 3]
  assert computed.members == tuple(ok) and computed.dropped == (3,)
  assert computed.hparams == tuple(store.members[e] for e in ok)
  assert computed.total_points == len(ok) * len(store.epochs)
  np.testing.assert_array_equal(computed.epochs, store.epochs)
  # The same store through analyze_trajectories: the same numbers, now written.
  reported = analysis.analyze_trajectories(store, str(tmp_path / 'out'), split='train')
  fit = computed.embedded.fit
  np.testing.assert_array_equal(fit.explained_stress, reported.explained_stress)
  np.testing.assert_array_equal(fit.eigenvalues, reported.eigenvalues)
  assert (computed.members, computed.dropped) == (reported.members, reported.dropped)
  # The report adds the map's account of what it left out before summarize's notes.
  assert reported.notes == ('Left out 8 points: member diverged.', *computed.notes)
  assert len(computed.embedded.member_P) == reported.num_points
  with np.load(tmp_path / 'out' / 'embedding.npz') as z:
    np.testing.assert_array_equal(z['explained_stress'], fit.explained_stress)
  with np.load(tmp_path / 'out' / 'equal_progress.npz') as z:
    np.testing.assert_array_equal(z['grid'], computed.compared.grid_G)
    np.testing.assert_array_equal(z['pair_distances'], computed.compared.pair_distances_ExE)


@pytest.mark.parametrize('kwargs, message', [
    (dict(max_points=1), 'max_points=1'), (dict(num_components=1), 'num_components=1'),
    (dict(grid_size=0), 'grid_size=0'),
])
def test_summarize_refuses_bad_arguments(fake_store, kwargs, message):
  with pytest.raises(ValueError, match=message):
    summary.summarize(fake_store(), **kwargs)


def test_progress_grid_spans_the_shared_start_to_the_median_end():
  progress_ExT = np.array([[0.10, 0.50, 0.90],
                           [0.20, 0.40, 0.60],
                           [0.05, 0.70, 0.80]])
  notes = []
  # From the latest start (0.2) to the median of the members' furthest progress (0.8).
  np.testing.assert_allclose(summary.progress_grid(progress_ExT, 4, notes),
                             [0.2, 0.4, 0.6, 0.8])
  assert notes == []
  np.testing.assert_allclose(summary.progress_grid(progress_ExT, 1), [0.2])


def test_progress_grid_without_a_shared_range_spans_everything_and_says_so():
  progress_ExT = np.array([[0.5, 0.6],
                           [0.1, 0.2],
                           [0.0, 0.3]])
  notes = []
  # Latest start 0.5 is past the median end 0.3: from the first start (0) to the furthest (0.6).
  np.testing.assert_allclose(summary.progress_grid(progress_ExT, 3, notes), [0.0, 0.3, 0.6])
  assert notes == ['Trajectories share no progress range; comparing each pair where both reach.']
  np.testing.assert_allclose(summary.progress_grid(progress_ExT, 3), [0.0, 0.3, 0.6])


def test_the_grid_of_a_report_is_progress_grid_of_its_progress(fake_store, tmp_path):
  analysis.analyze_trajectories(fake_store(), str(tmp_path), grid_size=7)
  with np.load(tmp_path / 'equal_progress.npz') as z:
    np.testing.assert_array_equal(z['grid'], analysis.progress_grid(z['progress'], 7))
    # Its ends by hand: the latest start, the median of the members' furthest progress.
    assert z['grid'][0] == z['progress'][:, 0].max()
    np.testing.assert_allclose(z['grid'][-1], np.median(z['progress'].max(axis=1)))
