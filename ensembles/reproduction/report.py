"""The reproduction report (docs/REPRODUCTION.md): the paper's four findings on one sweep.

The sweep (``ensembles/configs/reproduction.py``) is one-factor-at-a-time: per architecture
family a base configuration and variants that each change one factor, every configuration with
the same seeds. Each member carries a label ``(family, variant)``. The findings:

1. explained stress ES_1..ES_5 and eigenvalue signs of the joint InPCA embedding;
2. which factors separate trajectories: mean d_B at equal progress between the base and a
   variant of the same family (seed-matched, and with different seeds), and between the base
   configurations of two families, each divided by the seed-only baseline (base vs base,
   different seeds) measured on the same progress grid;
3. larger networks: progress against epochs for both widths, and the width row of (2);
4. initialisations: where the 'random_labels' and 'subset' members start (progress at step 0,
   d_B to ignorance, the embedding) and their distance to the mean of the default-init base
   runs at equal progress along training, against the base runs' own distance to that mean.

``regenerate(workdir, docs_dir)`` trains the sweep (resuming what the workdir holds),
runs the standard analysis (``analyze_trajectories``) and the four findings, and writes the
figures to ``docs_dir/figures/`` and the numbers to ``docs_dir/reproduction_numbers.md`` and
``.json`` (for a sweep on another dataset, ``figures/<tag>_*.png`` and
``reproduction_numbers_<tag>.md``, ``.json``: see ``ensembles/configs/reproduction.py``).

An application, not library code: its measurements are ``ensembles.analysis.design``; this
module gathers them into ``Findings``, draws the figures and writes the numbers files, which is
why it runs past 400 lines.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import jax
import matplotlib.figure
import numpy as np
import PIL.Image

from ensembles import store
from ensembles import training
from ensembles.analysis import design
from ensembles.analysis import geometry
from ensembles.analysis import plots
from ensembles.analysis import report
from ensembles.configs import reproduction as config_lib
from ensembles.training import devices
from ensembles.analysis.design import (BASE, INIT_VARIANTS, SEED_ONLY, WIDTH, InitJoin, Label,
                                       arch_rows, check_labels, compare, factor_rows, init_join)

# Epochs at which progress is tabulated for finding 3 (those on the recording grid are used),
# and the last one.
PROGRESS_EPOCHS = (0.5, 1.0, 2.0, 5.0, 10.0)

# Figures: small PNGs committed with the report.
FIGURE_DPI = 90
PANEL_SIZE = (3.2, 2.8)        # inches per subplot of the per-family figures
PALETTE_COLOURS = 128          # PNGs are saved with an adaptive palette of this many colours
RATIO_LOG2_RANGE = 3           # factor heat map: colours saturate at ratios 1/8 and 8

SPLIT = 'train'                # probes of every finding (the paper's choice)
NUMBERS_STEM = 'reproduction_numbers'  # + '_<tag>' for a tagged sweep, + '.md' and '.json'
FIGURES_DIR = 'figures'                # figure names get a '<tag>_' prefix for a tagged sweep


# ---------------------------------------------------------------------------------------------
# The four findings.


@dataclasses.dataclass
class Findings:
  """Every number of the report (figures are drawn from the same object)."""
  families: list[str]
  num_members: int
  dropped: list[int]
  explained_stress: np.ndarray
  eigenvalues: np.ndarray
  num_points: int
  factor_rows: list[design.FactorComparison]
  standard_factor_table: str
  epochs: np.ndarray
  progress_by_width: dict[str, dict[str, np.ndarray]]   # family -> variant -> (S, T)
  widths: dict[str, dict[str, int]]                     # family -> variant -> width
  accuracy: dict[str, dict[str, tuple[float, float]]]   # family -> variant -> train, test
  inits: dict[str, InitJoin]
  embedding: dict[str, np.ndarray]
  notes: list[str]


def measure(traj: Any, labels: Sequence[Label], analysis_dir: str) -> Findings:
  """Runs the standard analysis and the four findings on a trajectories store.

  Args:
    traj: the trajectories store (``ensembles.load_trajectories``) or an object like it,
      with ``metrics``.
    labels: one label per member of ``traj``.
    analysis_dir: where ``analyze_trajectories`` writes its files.
  """
  summary = report.analyze_trajectories(traj, analysis_dir, split=SPLIT, color_by='arch')
  notes = list(summary.notes)
  keep = np.asarray(summary.members)
  probs = traj.probs(SPLIT)[keep]
  labels_N = traj.labels(SPLIT)
  kept_labels = [labels[e] for e in keep]
  seeds_E = np.asarray([traj.members[e]['seed'] for e in keep])
  num_e, num_t, num_n, num_c = probs.shape
  progress_ExT = geometry.progress(probs.reshape(-1, num_n, num_c), labels_N).reshape(num_e,
                                                                                      num_t)
  family_E = np.asarray([label.family for label in kept_labels])
  variant_E = np.asarray([label.variant for label in kept_labels])
  default_E = ~np.isin(variant_E, INIT_VARIANTS)
  families = list(dict.fromkeys(family_E))
  rows_out, inits, by_width, widths, accuracy = [], {}, {}, {}, {}
  for family in families:
    rows = np.flatnonzero(family_E == family)
    cmp = compare(probs, labels_N, progress_ExT, rows, rows[default_E[rows]], notes)
    fam_labels = [kept_labels[e] for e in rows]
    rows_out += factor_rows(cmp.distances_GxExE, fam_labels, seeds_E[rows], family)
    if any(v in INIT_VARIANTS for v in variant_E[rows]):
      inits[family] = init_join(cmp, variant_E[rows], probs[rows, 0], progress_ExT[rows, 0])
    by_width[family] = {v: progress_ExT[rows[variant_E[rows] == v]] for v in (BASE, WIDTH)
                        if (variant_E[rows] == v).any()}
    widths[family] = {v: traj.members[keep[rows[variant_E[rows] == v][0]]]['width']
                      for v in by_width[family]}
    accuracy[family] = {
        v: tuple(float(np.nanmean(traj.metrics[f'{s}_accuracy'][keep[rows[variant_E[rows] == v]],
                                                               -1])) for s in ('train', 'test'))
        for v in dict.fromkeys(variant_E[rows])}
  base = np.flatnonzero(variant_E == BASE)
  if len(set(family_E[base])) > 1:
    cmp = compare(probs, labels_N, progress_ExT, base, base, notes)
    rows_out += arch_rows(cmp.distances_GxExE, family_E[base], seeds_E[base])
  emb = dict(np.load(os.path.join(analysis_dir, 'embedding.npz')))
  return Findings(
      families=families, num_members=len(keep), dropped=list(summary.dropped),
      explained_stress=summary.explained_stress, eigenvalues=summary.eigenvalues,
      num_points=summary.num_points, factor_rows=rows_out,
      standard_factor_table=summary.factor_table.to_markdown(), epochs=traj.epochs,
      progress_by_width=by_width, widths=widths, accuracy=accuracy, inits=inits, embedding=emb,
      notes=notes)


# ---------------------------------------------------------------------------------------------
# Figures.


def _figure(num_panels: int):
  fig = matplotlib.figure.Figure(figsize=(PANEL_SIZE[0] * num_panels, PANEL_SIZE[1]))
  return fig, fig.subplots(1, num_panels, squeeze=False)[0]


def _save(fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=FIGURE_DPI)
  return path


def plot_progress_by_width(path: str, f: Findings) -> str:
  """Progress against epochs, mean and spread over seeds, base width and wide, per family."""
  fams = [x for x in f.families if WIDTH in f.progress_by_width[x]]
  fig, axes = _figure(max(1, len(fams)))
  for ax, family in zip(axes, fams):
    for variant, style in ((BASE, '-'), (WIDTH, '--')):
      p_SxT = f.progress_by_width[family][variant]
      mean_T, std_T = p_SxT.mean(axis=0), p_SxT.std(axis=0)
      ax.plot(f.epochs, mean_T, style, label=f'width {f.widths[family][variant]}')
      ax.fill_between(f.epochs, mean_T - std_T, mean_T + std_T, alpha=0.25)
    ax.set_title(family)
    ax.set_xlabel('epoch')
    ax.set_ylim(0, 1)
    ax.legend(fontsize='small')
  axes[0].set_ylabel('progress λ')
  return _save(fig, path)


def plot_init_join(path: str, f: Findings) -> str:
  """d_B to the mean of the default-init base runs against progress, per family."""
  fams = list(f.inits)
  fig, axes = _figure(max(1, len(fams)))
  for ax, family in zip(axes, fams):
    join = f.inits[family]
    for variant, d_G in join.distance.items():
      ax.plot(join.grid, d_G, marker='o', ms=3, label=variant)
    ax.set_title(family)
    ax.set_xlabel('progress λ')
    ax.set_yscale('log')
  axes[0].set_ylabel('d_B to default-init mean')
  axes[0].legend(fontsize='small')
  return _save(fig, path)


def plot_factor_ratios(path: str, f: Findings) -> str:
  """Heat maps of distance / seed distance, factor x family: other seeds, and same seed."""
  names = list(dict.fromkeys(r.factor for r in f.factor_rows if r.factor != SEED_ONLY))
  cols = f.families + ['all']
  fig = matplotlib.figure.Figure(figsize=(2 * (0.8 * len(cols) + 1.6), 0.4 * len(names) + 1.4))
  axes = fig.subplots(1, 2, sharey=True)
  for ax, kind in zip(axes, ('other_seed', 'same_seed')):
    ratio = np.full((len(names), len(cols)), np.nan)
    for r in f.factor_rows:
      if r.factor != SEED_ONLY:
        ratio[names.index(r.factor), cols.index(r.family)] = getattr(r, kind).ratio_to_seed
    image = ax.imshow(np.log2(ratio), cmap='coolwarm', vmin=-RATIO_LOG2_RANGE,
                      vmax=RATIO_LOG2_RANGE, aspect='auto')
    for i, j in zip(*np.nonzero(np.isfinite(ratio))):
      ax.text(j, i, f'{ratio[i, j]:.2f}', ha='center', va='center', fontsize='x-small')
    ax.set_xticks(range(len(cols)), cols, rotation=45, fontsize='small')
    ax.set_yticks(range(len(names)), names, fontsize='small')
    ax.set_title(kind.replace('_', ' ') + ' pairs', fontsize='medium')
  fig.colorbar(image, ax=axes, label='log2(d_B / seed-only d_B)')
  fig.suptitle('distance at equal progress / seed-only distance', fontsize='medium')
  fig.savefig(path, dpi=FIGURE_DPI, bbox_inches='tight')
  return path


def _shrink(path: str) -> str:
  """Rewrites a PNG with an adaptive palette of PALETTE_COLOURS colours (a few times smaller)."""
  with PIL.Image.open(path) as image:
    small = image.convert('RGB').quantize(colors=PALETTE_COLOURS)
  small.save(path, optimize=True)
  return path


def figure_name(name: str, tag: str = '') -> str:
  """A figure's file name: ``name``, prefixed ``<tag>_`` for a tagged sweep (another dataset)."""
  return f'{tag}_{name}' if tag else name


def numbers_names(tag: str = '') -> tuple[str, str]:
  """The numbers files' names (markdown, JSON), suffixed ``_<tag>`` for a tagged sweep."""
  stem = f'{NUMBERS_STEM}_{tag}' if tag else NUMBERS_STEM
  return f'{stem}.md', f'{stem}.json'


def write_figures(fig_dir: str, f: Findings, member_values: dict[str, list[Any]],
                  tag: str = '') -> list[str]:
  """Every figure of the report.

  Args:
    fig_dir: where the PNGs go.
    f: the findings.
    member_values: colouring key -> value per kept member.
    tag: '' or the sweep's tag (``figure_name``).
  """
  os.makedirs(fig_dir, exist_ok=True)
  path = lambda name: os.path.join(fig_dir, figure_name(name, tag))  # noqa: E731
  emb = f.embedding
  refs = plots.References(emb['ignorance_coords'], emb['truth_coords'], emb['geodesic_coords'])
  members = emb['member']  # original indices; map to positions among the kept members
  position = {m: i for i, m in enumerate(np.unique(members))}
  member_P = np.asarray([position[m] for m in members])
  out = [plots.plot_explained_stress(path('explained_stress.png'), f.explained_stress,
                                     f.eigenvalues, title='joint embedding (train probes)')]
  for key, values in member_values.items():
    out.append(plots.plot_embedding(
        path(f'embedding_{key}.png'), emb['coords'], member_P, emb['epoch'],
        [values[i] for i in np.unique(members)], color_by=key, references=refs,
        eigenvalues=f.eigenvalues, dims=2, title=f'InPCA, coloured by {key}'))
  out.append(plot_factor_ratios(path('factor_ratios.png'), f))
  out.append(plot_progress_by_width(path('progress_by_width.png'), f))
  if f.inits:
    out.append(plot_init_join(path('init_join.png'), f))
  return [_shrink(p) for p in out]


# ---------------------------------------------------------------------------------------------
# Numbers.


def _fmt(x: float, digits: int = 3) -> str:
  return 'n/a' if not np.isfinite(x) else f'{x:.{digits}g}'


def numbers_markdown(f: Findings, run: dict[str, Any]) -> str:
  """The machine-written numbers file quoted by docs/REPRODUCTION.md."""
  lines = ['# Reproduction numbers (machine-written; do not edit)', '',
           f'Written by `{run["command"]}` on {run["date"]}.', '', '## Run', '']
  lines += [f'- {k}: {v}' for k, v in run.items() if k not in ('command', 'date')]
  lines += [f'- members analysed: {f.num_members} (dropped as diverged: {f.dropped or "none"})',
            '- notes: ' + ' '.join(f.notes), '', '## 1. Explained stress (train probes)', '',
            f'Joint InPCA of {f.num_points} points (checkpoints of all members).', '',
            '| k | ES_k | λ_k | sign |', '|---|---|---|---|']
  for k, (es, lam) in enumerate(zip(f.explained_stress, f.eigenvalues), 1):
    lines.append(f'| {k} | {es:.4f} | {lam:.4g} | {"+" if lam > 0 else "-"} |')
  lines += ['', '## 2. Factors: mean d_B at equal progress, and ratio to the seed baseline', '',
            'Per family, the base configuration vs the variant changing one factor. '
            '"same seed": seed-matched pairs (the factor alone differs); "other seed": pairs '
            'that also differ in the seed. d_B: mean over pairs of the mean over the progress '
            'values both members reach. Ratio: that mean / the mean of the seed-only distance '
            '(base vs base, different seeds, same family and grid) over the same progress '
            'values pair by pair. Row `arch`: base configurations of two different families, '
            'on a grid shared by all families, against the within-family seed pairs pooled on '
            'that grid (row `seed`, family `all`).', '',
            '| factor | family | pairs (same seed) | d_B same seed | ratio | '
            'pairs (other seed) | d_B other seed | ratio |', '|---|---|---|---|---|---|---|---|']
  for r in f.factor_rows:
    lines.append(f'| {r.factor} | {r.family} | {r.same_seed.num_pairs} | '
                 f'{_fmt(r.same_seed.mean)} | {_fmt(r.same_seed.ratio_to_seed)} | '
                 f'{r.other_seed.num_pairs} | {_fmt(r.other_seed.mean)} | '
                 f'{_fmt(r.other_seed.ratio_to_seed)} |')
  lines += ['', 'Standard factor table of `analyze_trajectories` (one grid for all members; '
            'width counts as `arch`, Adam as `several`):', '', f.standard_factor_table,
            '## 3. Progress against epochs by width (mean over seeds)', '']
  shown = [e for e in dict.fromkeys((*PROGRESS_EPOCHS, float(f.epochs[-1])))
           if np.isin(e, f.epochs)]
  lines += ['| family | variant | width | ' + ' | '.join(f'epoch {e:g}' for e in shown)
            + ' | final train acc | final test acc |', '|---' * (5 + len(shown)) + '|']
  for family, by in f.progress_by_width.items():
    for variant, p_SxT in by.items():
      cells = [f'{p_SxT[:, list(f.epochs).index(e)].mean():.3f}' for e in shown]
      acc = f.accuracy[family][variant]
      lines.append(f'| {family} | {variant} | {f.widths[family][variant]} | '
                   + ' | '.join(cells) + f' | {acc[0]:.3f} | {acc[1]:.3f} |')
  lines += ['', 'Final accuracy (probes) of every configuration:', '',
            '| family | variant | train acc | test acc |', '|---|---|---|---|']
  for family, by in f.accuracy.items():
    for variant, (tr, te) in by.items():
      lines.append(f'| {family} | {variant} | {tr:.3f} | {te:.3f} |')
  lines += ['', '## 4. Initialisations', '']
  if not f.inits:
    lines.append('Not measured: the sweep has no init variants.')
  for family, join in f.inits.items():
    lines += [f'### {family}', '', '| variant | progress at step 0 (mean ± std) | '
              'd_B(step 0, ignorance) | ' + ' | '.join(f'λ={g:.3f}' for g in join.grid) + ' |',
              '|---' * (3 + len(join.grid)) + '|']
    for v, d_G in join.distance.items():
      mean, std = join.start_progress[v]
      lines.append(f'| {v} | {mean:.3f} ± {std:.3f} | {join.start_to_ignorance[v]:.4f} | '
                   + ' | '.join(_fmt(x) for x in d_G) + ' |')
    lines.append('')
  return '\n'.join(lines) + '\n'


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, tuple) and hasattr(x, '_asdict'):
    return _jsonable(x._asdict())
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, (float, np.floating)):
    return float(x) if np.isfinite(x) else None
  if isinstance(x, np.integer):
    return int(x)
  return x


def numbers_json(f: Findings, run: dict[str, Any]) -> str:
  data = dataclasses.asdict(f)
  data.pop('embedding')
  data.pop('progress_by_width')
  data['progress_by_width_mean'] = {fam: {v: p.mean(axis=0) for v, p in by.items()}
                                    for fam, by in f.progress_by_width.items()}
  data['factor_rows'] = f.factor_rows
  data['inits'] = f.inits
  return json.dumps(_jsonable(dict(run=run, findings=data)), indent=1)


def training_seconds(workdir: str) -> float:
  """Seconds from a store's sweep.json to its last record (what training took, resumes included).

  Measured from file times, so it holds however the store was trained (one command or many).
  """
  start = os.path.getmtime(os.path.join(workdir, 'sweep.json'))
  records = glob.glob(os.path.join(workdir, 'cohorts', '*', 'records', '*'))
  return max((os.path.getmtime(r) for r in records), default=start) - start


def machine() -> str:
  """The machine, in words: processor, cores, OS."""
  return (f'{devices.cpu_name()}, {os.cpu_count()} logical cores, '
          f'{platform.system()} {platform.release()}')


def run_info(command: str, train_seconds: float, analysis_seconds: float,
             device: str) -> dict[str, Any]:
  """What, where and how long: the 'Run' section of the numbers file."""
  load = ', '.join(f'{x:.2f}' for x in os.getloadavg())
  run = dict(command=command,
             date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
             machine=machine(), jax_devices=device)
  run['training wall time (s), sweep.json to last record'] = f'{train_seconds:.0f}'
  run['analysis wall time (s)'] = f'{analysis_seconds:.0f}'
  run['load average at the end (1, 5, 15 min)'] = load
  return run


def report_files(docs_dir: str, f: Findings, run: dict[str, Any],
                 member_values: dict[str, list[Any]], tag: str = '') -> list[str]:
  """Writes the figures and both numbers files under ``docs_dir``; returns the paths.

  ``tag`` ('' or the sweep's tag) names the files (``figure_name``, ``numbers_names``).
  """
  os.makedirs(docs_dir, exist_ok=True)
  files = write_figures(os.path.join(docs_dir, FIGURES_DIR), f, member_values, tag)
  md_name, json_name = numbers_names(tag)
  for name, text in ((md_name, numbers_markdown(f, run)), (json_name, numbers_json(f, run))):
    with open(os.path.join(docs_dir, name), 'w') as out:
      out.write(text)
    files.append(os.path.join(docs_dir, name))
  return files


def regenerate(workdir: str, docs_dir: str, config_arg: str = '', train: bool = True,
               command: str = '') -> list[str]:
  """Trains the reproduction sweep (resuming) and writes every figure and number of the report.

  Args:
    workdir: the trajectories store; the standard analysis goes to ``workdir/analysis``.
    docs_dir: where the figures (``figures/``) and the numbers files go.
    config_arg: the argument of ``ensembles/configs/reproduction.py`` (its ``ARGS``: '' for digits,
      'mnist1d', 'mnist5k', or their 'tiny' forms). A sweep on another dataset than digits
      names its files with its tag (``figures/<tag>_*.png``, ``reproduction_numbers_<tag>.md``),
      so the datasets' reports sit side by side.
    train: train (or resume) first; False analyses what the store holds.
    command: the command line, written into the numbers file.

  Returns:
    The paths written under ``docs_dir``.
  """
  config = config_lib.get_config(config_arg)
  if train:
    print(training.train_and_record(config, workdir).table(), flush=True)
  traj = store.load_trajectories(workdir)
  spec = config_lib.sweep_spec(config_arg)
  changes = {Label(*k): v for k, v in config_lib.variants(config_arg).items()}
  labels = [label for label in changes for _ in config.sweep.seed]
  check_labels(traj.members, labels, changes)
  start = time.time()
  findings = measure(traj, labels, os.path.join(workdir, 'analysis'))
  kept = [traj.members[e] for e in range(len(traj.members))
          if traj.status[e] != store.STATUS_DIVERGED]
  member_values = {'arch': [m['arch'] for m in kept], 'init': [m['init'] for m in kept]}
  device_kind = f'{jax.device_count()} x {jax.devices()[0].platform}'
  run = run_info(command, training_seconds(workdir), time.time() - start, device_kind)
  run['dataset'] = spec.dataset
  return report_files(docs_dir, findings, run, member_values, spec.docs_tag)
