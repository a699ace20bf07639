"""Tests of ensembles.analysis.plots: the PNG files and the interactive HTML view."""

import re
import struct

import numpy as np
import pytest

from ensembles.analysis import plots

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _png_size(path) -> tuple[int, int]:
  """(width, height) in pixels, read from the PNG's IHDR chunk (the first one)."""
  with open(path, 'rb') as f:
    head = f.read(24)
  assert head[:8] == PNG_MAGIC and head[12:16] == b'IHDR', head
  return struct.unpack('>II', head[16:24])


def _pixels(inches: float) -> int:
  return int(round(inches * plots.DPI))


def _embedding(num_members=4, num_times=6, k=4, seed=0):
  """Points of ``num_members`` random walks in ``k`` dimensions, members in order."""
  rng = np.random.default_rng(seed)
  coords = np.cumsum(rng.normal(size=(num_members, num_times, k)), axis=1).reshape(-1, k)
  member = np.repeat(np.arange(num_members), num_times)
  order = np.tile(np.arange(num_times), num_members)
  references = plots.References(ignorance=np.zeros(k), truth=np.ones(k),
                                geodesic=np.linspace(0, 1, 5)[:, None] * np.ones(k))
  return coords, member, order, references


@pytest.mark.parametrize('dims', [2, 3])
@pytest.mark.parametrize('values', [['mlp', 'cnn', 'mlp', 'cnn'],
                                    list(np.geomspace(1e-3, 1.0, 12))])  # A colour bar.
def test_plot_embedding_writes_a_png_of_the_figure_size(tmp_path, dims, values):
  coords, member, order, references = _embedding(num_members=len(values))
  path = str(tmp_path / 'embedding.png')
  assert plots.plot_embedding(path, coords, member, order, values, color_by='arch',
                              references=references, eigenvalues=[3.0, 1.0, -0.5, 0.1],
                              dims=dims, title='test') == path
  assert _png_size(path) == (_pixels(plots.FIGURE_SIZE[0]), _pixels(plots.FIGURE_SIZE[1]))


@pytest.mark.parametrize('dims, columns', [(1, 4), (4, 4), (3, 2)])
def test_plot_embedding_refuses_dims_it_cannot_draw(tmp_path, dims, columns):
  coords, member, order, _ = _embedding(k=columns)
  with pytest.raises(ValueError, match=f'dims={dims} with coords of shape'):
    plots.plot_embedding(str(tmp_path / 'x.png'), coords, member, order, ['a'] * 4, dims=dims)
  assert not (tmp_path / 'x.png').exists()


def test_plot_explained_stress_writes_a_png_of_its_size(tmp_path):
  path = str(tmp_path / 'stress.png')
  assert plots.plot_explained_stress(path, [0.5, 0.7, 0.8, 0.85], [4.0, -1.0, 0.6, -0.2],
                                     title='ES') == path
  width, height = plots.FIGURE_SIZE[0], plots.FIGURE_SIZE[1] * plots.STRESS_FIGURE_HEIGHT
  assert _png_size(path) == (_pixels(width), _pixels(height))


def test_write_embedding_html_holds_the_hover_text(tmp_path):
  coords, member, order, references = _embedding(num_members=3)
  hover = [f'member {m}, learning_rate={lr}, epoch {t}'
           for m, lr in enumerate((0.1, 0.02, 0.5)) for t in range(6)]
  path = str(tmp_path / 'view.html')
  assert plots.write_embedding_html(path, coords, member, order, [0.1, 0.02, 0.5],
                                    color_by='learning_rate', references=references,
                                    hover=hover, title='view') == path
  with open(path) as f:
    html = f.read()
  assert '<html>' in html and html.rstrip().endswith('</html>')
  # Self-contained: plotly.js is in the file, not fetched from a CDN.
  assert 'Plotly' in html and len(html) > 1_000_000
  assert not re.search(r'<script[^>]*\bsrc=', html)
  assert all(text in html for text in hover)
  assert 'learning_rate=0.02' in html  # The legend name of a member.


def test_embedding_figure_3d_has_one_trace_per_member_and_the_references():
  coords, member, order, references = _embedding(num_members=3)
  fig = plots.embedding_figure_3d(coords, member, order, ['a', 'b', 'a'], color_by='arch',
                                  references=references)
  names = [trace.name for trace in fig.data]
  assert names == ['arch=a', 'arch=b', 'arch=a', 'geodesic', 'ignorance', 'truth']
  # Each member's line follows its points in trajectory order.
  np.testing.assert_allclose(fig.data[1].x, coords[member == 1][:, 0])
  with pytest.raises(ValueError, match='a 3-D view needs >= 3 columns'):
    plots.embedding_figure_3d(coords[:, :2], member, order, ['a', 'b', 'a'])


def test_the_hover_of_each_point_follows_its_trajectory_in_the_3d_view():
  coords, member, order, _ = _embedding(num_members=2, num_times=3)
  shuffle = np.array([5, 0, 4, 2, 1, 3])  # Points in any order: each line sorts its own.
  hover = [f'm{m} t{t}' for m, t in zip(member, order)]
  fig = plots.embedding_figure_3d(coords[shuffle], member[shuffle], order[shuffle], ['a', 'b'],
                                  hover=[hover[p] for p in shuffle])
  assert [list(trace.hovertext) for trace in fig.data] == [['m0 t0', 'm0 t1', 'm0 t2'],
                                                           ['m1 t0', 'm1 t1', 'm1 t2']]
  with pytest.raises(ValueError, match='2 hover texts for 6 points: one per point'):
    plots.embedding_figure_3d(coords, member, order, ['a', 'b'], hover=['x', 'y'])


def test_point_hover_shows_member_swept_hparams_epoch_step_and_metrics():
  hparams = [dict(arch='mlp', patch_size=4, learning_rate=0.1, seed=s) for s in (0, 1)]
  hparams.append(dict(arch='mlp', patch_size=4, learning_rate=0.05, seed=0))
  texts = plots.point_hover([2, 0], hparams, [1.5, 0.0], step=[30, -1],
                            metrics={'train_accuracy': [0.81234, np.nan],
                                     'test_accuracy': [0.79, 0.1]})
  assert texts == ['member 2<br>learning_rate=0.05, seed=0<br>epoch 1.5, step 30<br>'
                   'train_accuracy=0.812, test_accuracy=0.790',
                   # Step -1 and NaN: not recorded, left out.
                   'member 0<br>learning_rate=0.1, seed=0<br>epoch 0<br>test_accuracy=0.100']
  # Keyed by member index (a subset of a sweep): what varies among those given is shown.
  assert plots.point_hover([7], {7: hparams[0], 9: hparams[2]}, [2.0]) == [
      'member 7<br>learning_rate=0.1<br>epoch 2']


def test_hover_of_a_store_on_a_step_axis_says_step_once():
  hover = plots.point_hover([0, 1], [dict(lr=0.1), dict(lr=0.2)], [100.0, 50.0], [100, 50],
                            time_unit='step')
  assert hover == ['member 0<br>lr=0.1<br>step 100', 'member 1<br>lr=0.2<br>step 50']
