"""Pictures of an InPCA embedding: trajectories as lines, references, explained stress.

Static figures are drawn on ``matplotlib.figure.Figure`` objects and saved as PNG through the
Agg renderer, without pyplot: no display is needed and the caller's backend (e.g. a notebook's
inline one) is left alone. The interactive 3-D view is a plotly figure, written as a
self-contained HTML file for the notebooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import matplotlib
import matplotlib.cm
import matplotlib.colors
import matplotlib.figure
import matplotlib.patches
import mpl_toolkits.mplot3d  # noqa: F401  (registers the '3d' projection)
import numpy as np

# At most this many distinct values of the colouring factor get discrete colours and a legend;
# more (e.g. a learning-rate sweep) are drawn on a continuous colour map with a colour bar.
MAX_CATEGORIES = 10

# Figure geometry and resolution of the PNG files.
FIGURE_SIZE = (7.0, 6.0)
DPI = 120

# Trajectory line width and alpha: many overlapping runs should stay readable.
LINE_WIDTH = 0.8
LINE_ALPHA = 0.7
# Marker area (points^2) at the last checkpoint of each run, and of ignorance / truth.
END_MARKER_SIZE = 6
REFERENCE_MARKER_SIZE = 80
GEODESIC_LINE_WIDTH = 1.5
# Height of the explained-stress figure relative to FIGURE_SIZE.
STRESS_FIGURE_HEIGHT = 0.6
# Line widths and marker size (pixels) in the interactive view.
HTML_LINE_WIDTH, HTML_GEODESIC_WIDTH, HTML_MARKER_SIZE = 3, 4, 6

_REFERENCE_STYLE = {
    'ignorance': dict(marker='o', color='black', label='ignorance'),
    'truth': dict(marker='*', color='gold', label='truth'),
}
_SPACE_COLOR, _TIME_COLOR = 'tab:blue', 'tab:red'


class References(NamedTuple):
  """Projected reference points (each row: coordinates in the embedding).

  Attributes:
    ignorance: (k,) coordinates of the uniform predictions.
    truth: (k,) coordinates of the one-hot labels.
    geodesic: (G, k) coordinates of points along the ignorance -> truth geodesic.
  """
  ignorance: np.ndarray
  truth: np.ndarray
  geodesic: np.ndarray


def _trajectories(member_P: np.ndarray, order_P: np.ndarray):
  """Yields (member, point indices in trajectory order)."""
  for member in np.unique(member_P):
    rows = np.flatnonzero(member_P == member)
    yield member, rows[np.argsort(order_P[rows], kind='stable')]


def _colours(values: Sequence[Any]):
  """(colour per member, legend entries or None, scalar mappable or None)."""
  values = list(values)
  unique = sorted(set(map(str, values)))
  if len(unique) <= MAX_CATEGORIES:
    cmap = matplotlib.colormaps['tab10']
    table = {v: cmap(i) for i, v in enumerate(unique)}
    return [table[str(v)] for v in values], table, None
  numeric = np.asarray(values, np.float64)
  use_log = bool(np.all(numeric > 0) and numeric.max() / numeric.min() > 10)
  norm_cls = matplotlib.colors.LogNorm if use_log else matplotlib.colors.Normalize
  norm = norm_cls(numeric.min(), numeric.max())
  mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap='viridis')
  return [mappable.to_rgba(v) for v in numeric], None, mappable


def _axis_label(a: int, eigenvalues: np.ndarray | None) -> str:
  if eigenvalues is None:
    return f'PC{a + 1}'
  kind = 'time-like' if eigenvalues[a] < 0 else 'space-like'
  return f'PC{a + 1} ({kind}, λ={eigenvalues[a]:.3g})'


def plot_embedding(path: str, coords: Any, member: Any, order: Any, member_values: Sequence[Any],
                   color_by: str = '', references: References | None = None,
                   eigenvalues: Any = None, dims: int = 2, title: str = '') -> str:
  """Draws trajectories in the first 2 or 3 InPCA dimensions and saves a PNG.

  Args:
    path: output PNG file.
    coords: (P, k) coordinates of the points, k >= dims.
    member: (P,) trajectory (member) index of each point.
    order: (P,) position of each point along its trajectory (e.g. epoch), sets line order.
    member_values: for each member index, the value of the colouring factor.
    color_by: name of the colouring factor (legend title).
    references: optional projected ignorance, truth and geodesic.
    eigenvalues: optional (k,) eigenvalues, to label axes space-/time-like.
    dims: 2 or 3.
    title: figure title.

  Returns:
    The path written.

  Raises:
    ValueError: if dims is not 2 or 3, or coords have fewer than dims columns.
  """
  coords_PxK = np.asarray(coords, np.float64)
  if dims not in (2, 3) or coords_PxK.ndim != 2 or coords_PxK.shape[1] < dims:
    raise ValueError(f'dims={dims} with coords of shape {coords_PxK.shape}: dims must be 2 or 3 '
                     'and coords need at least that many columns.')
  member_P, order_P = np.asarray(member), np.asarray(order)
  colours, legend, mappable = _colours(member_values)
  fig = matplotlib.figure.Figure(figsize=FIGURE_SIZE)
  ax = fig.add_subplot(projection='3d' if dims == 3 else None)
  for m, rows in _trajectories(member_P, order_P):
    xyz = coords_PxK[rows, :dims].T
    ax.plot(*xyz, color=colours[m], lw=LINE_WIDTH, alpha=LINE_ALPHA)
    ax.scatter(*xyz[:, -1:], color=colours[m], s=END_MARKER_SIZE)
  if references is not None:
    ax.plot(*np.asarray(references.geodesic)[:, :dims].T, ls='--', color='gray',
            lw=GEODESIC_LINE_WIDTH, label='geodesic')
    for name, style in _REFERENCE_STYLE.items():
      ax.scatter(*np.asarray(getattr(references, name))[:dims, None], s=REFERENCE_MARKER_SIZE,
                 zorder=5, edgecolor='black', **style)
  eig = None if eigenvalues is None else np.asarray(eigenvalues)
  setters = [ax.set_xlabel, ax.set_ylabel] + ([ax.set_zlabel] if dims == 3 else [])
  for a, setter in enumerate(setters):
    setter(_axis_label(a, eig))
  if legend is not None:
    for value, colour in legend.items():
      ax.plot([], [], color=colour, label=f'{color_by}={value}')
  elif mappable is not None:
    fig.colorbar(mappable, ax=ax, label=color_by)
  ax.legend(fontsize='small', loc='best')
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  return path


def plot_explained_stress(path: str, explained_stress: Any, eigenvalues: Any,
                          title: str = '') -> str:
  """Bars of cumulative explained stress ES_k, coloured by the sign of lam_k; saves a PNG.

  Args:
    path: output PNG file.
    explained_stress: (k,) cumulative ES_1..ES_k.
    eigenvalues: (k,) eigenvalues (sign sets the colour: blue space-like, red time-like).
    title: figure title.

  Returns:
    The path written.
  """
  es_K = np.asarray(explained_stress, np.float64)
  lam_K = np.asarray(eigenvalues, np.float64)
  ks = np.arange(1, len(es_K) + 1)
  fig = matplotlib.figure.Figure(figsize=(FIGURE_SIZE[0], FIGURE_SIZE[1] * STRESS_FIGURE_HEIGHT))
  ax = fig.add_subplot()
  ax.bar(ks, es_K, color=[_TIME_COLOR if v < 0 else _SPACE_COLOR for v in lam_K])
  handles = [matplotlib.patches.Patch(color=_SPACE_COLOR, label='λ > 0 (space-like)'),
             matplotlib.patches.Patch(color=_TIME_COLOR, label='λ < 0 (time-like)')]
  ax.set_xlabel('components k')
  ax.set_ylabel('explained stress ES_k')
  ax.set_ylim(0, 1)
  ax.set_xticks(ks)
  ax.legend(handles=handles, loc='lower right')
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  return path


def swept_keys(hparams: Sequence[Mapping[str, Any]]) -> list[str]:
  """The hparams keys whose value differs between members, in the order of the first member."""
  keys = list(dict.fromkeys(k for hp in hparams for k in hp))
  return [k for k in keys if len({repr(hp.get(k)) for hp in hparams}) > 1]


def point_hover(member: Any, hparams: Sequence[Mapping] | Mapping[int, Mapping], epoch: Any,
                step: Any = None, metrics: Mapping[str, Any] | None = None,
                time_unit: str = 'epoch') -> list[str]:
  """The hover text of each point: its member, the hparams that vary, epoch, step, metrics.

  Only the hparams that differ between the members of ``hparams`` are shown (an MLP sweep's
  ``patch_size`` is the same for every member: it says nothing). A step below 0 or a NaN
  metric (not recorded) is left out.

  Example:
    >>> point_hover([1], [dict(arch='mlp', seed=0), dict(arch='mlp', seed=1)], [2.0], [40],
    ...             {'test_accuracy': [0.9]})
    ['member 1<br>seed=1<br>epoch 2, step 40<br>test_accuracy=0.900']

  Args:
    member: (P,) each point's member: an index into ``hparams``, shown as the member's number.
    hparams: every member's hparams, as a list or keyed by member index.
    epoch: (P,) each point's epoch (its step where ``time_unit`` is 'step': a store whose
      writer was given no epochs).
    step: optional (P,) training step of each point.
    metrics: optional name -> (P,) values (e.g. train_accuracy, test_accuracy), shown to 3
      decimals.

  Returns:
    P strings, lines separated by ``<br>`` (plotly's line break).
  """
  all_hparams = list(hparams.values()) if isinstance(hparams, Mapping) else list(hparams)
  swept = swept_keys(all_hparams)
  member_P, epoch_P = np.asarray(member), np.asarray(epoch, np.float64)
  step_P = None if step is None else np.asarray(step)
  metrics_P = {k: np.asarray(v, np.float64) for k, v in (metrics or {}).items()}
  texts = []
  for p, m in enumerate(member_P):
    hp = hparams[int(m)]
    lines = [f'member {int(m)}', ', '.join(f'{k}={hp.get(k)}' for k in swept)]
    when = f'{time_unit} {epoch_P[p]:g}'
    if step_P is not None and step_P[p] >= 0 and time_unit != 'step':
      when += f', step {int(step_P[p])}'
    lines.append(when)
    lines.append(', '.join(f'{k}={v[p]:.3f}' for k, v in metrics_P.items() if np.isfinite(v[p])))
    texts.append('<br>'.join(line for line in lines if line))
  return texts


def embedding_figure_3d(coords: Any, member: Any, order: Any, member_values: Sequence[Any],
                        color_by: str = '', references: References | None = None,
                        hover: Sequence[str] | None = None, title: str = ''):
  """An interactive plotly 3-D figure of the trajectories (one trace per member).

  Args:
    coords: (P, k >= 3) coordinates.
    member: (P,) member index of each point.
    order: (P,) position along the trajectory.
    member_values: colouring factor value per member index.
    color_by: name of the colouring factor.
    references: optional projected ignorance, truth and geodesic.
    hover: optional (P,) text of each point, shown on hover (``point_hover`` writes one).
    title: figure title.

  Returns:
    A ``plotly.graph_objects.Figure``.
  """
  import plotly.graph_objects as go  # plotly is only needed for the interactive view.

  coords_PxK = np.asarray(coords, np.float64)
  if coords_PxK.ndim != 2 or coords_PxK.shape[1] < 3:
    raise ValueError(f'coords has shape {coords_PxK.shape}: a 3-D view needs >= 3 columns.')
  if hover is not None and len(hover) != len(coords_PxK):
    raise ValueError(f'{len(hover)} hover texts for {len(coords_PxK)} points: one per point.')
  colours, _, _ = _colours(member_values)
  fig = go.Figure()
  shown = set()
  for m, rows in _trajectories(np.asarray(member), np.asarray(order)):
    x, y, z = coords_PxK[rows, :3].T
    rgba = 'rgba({:.0f},{:.0f},{:.0f},{:.2f})'.format(*(255 * np.asarray(colours[m][:3])),
                                                       LINE_ALPHA)
    name = f'{color_by}={member_values[m]}'
    fig.add_trace(go.Scatter3d(
        x=x, y=y, z=z, mode='lines', line=dict(color=rgba, width=HTML_LINE_WIDTH), name=name,
        legendgroup=name, showlegend=name not in shown,
        hovertext=None if hover is None else [hover[p] for p in rows],
        hoverinfo='all' if hover is None else 'text'))
    shown.add(name)
  if references is not None:
    g = np.asarray(references.geodesic)
    fig.add_trace(go.Scatter3d(x=g[:, 0], y=g[:, 1], z=g[:, 2], mode='lines', name='geodesic',
                               line=dict(color='gray', dash='dash', width=HTML_GEODESIC_WIDTH)))
    for name, style in _REFERENCE_STYLE.items():
      point = np.asarray(getattr(references, name))
      fig.add_trace(go.Scatter3d(x=point[:1], y=point[1:2], z=point[2:3], mode='markers',
                                 name=name,
                                 marker=dict(size=HTML_MARKER_SIZE, color=style['color'])))
  fig.update_layout(title=title, scene=dict(xaxis_title='PC1', yaxis_title='PC2',
                                            zaxis_title='PC3'))
  return fig


def write_embedding_html(path: str, *args, **kwargs) -> str:
  """Writes ``embedding_figure_3d(*args, **kwargs)`` as a self-contained HTML file."""
  embedding_figure_3d(*args, **kwargs).write_html(path, include_plotlyjs=True)
  return path
