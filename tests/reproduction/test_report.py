"""Tests of ensembles.reproduction.report: file names per sweep tag, and the whole command on the
tiny sweeps (figures, numbers, and the start points recomputed from the store)."""

import json
import os

import numpy as np
import pytest

import ensembles
from ensembles.configs import reproduction as config_lib
from ensembles.reproduction import report as reproduction


def test_tagged_sweeps_name_their_files_apart():
  assert config_lib.sweep_spec('').docs_tag == config_lib.sweep_spec('tiny').docs_tag == ''
  assert reproduction.numbers_names('') == ('reproduction_numbers.md', 'reproduction_numbers.json')
  for dataset in ('mnist1d', 'mnist5k'):
    spec, tiny = config_lib.sweep_spec(dataset), config_lib.sweep_spec(f'{dataset}_tiny')
    assert spec.docs_tag == tiny.docs_tag == dataset
    assert spec.dataset == tiny.dataset == dataset
    assert reproduction.numbers_names(dataset) == (f'reproduction_numbers_{dataset}.md',
                                                   f'reproduction_numbers_{dataset}.json')
    assert reproduction.figure_name('init_join.png', dataset) == f'{dataset}_init_join.png'


@pytest.fixture(scope='module')
def tiny_report(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp('repro') / 'store')
  docs = str(tmp_path_factory.mktemp('docs'))
  config = config_lib.get_config('tiny')
  config.data.data_dir = data_dir
  config.train.log_every_seconds = 1e9
  ensembles.train_and_record(config, workdir)
  files = reproduction.regenerate(workdir, docs, 'tiny', train=False, command='test')
  return workdir, docs, files


def test_regenerate_writes_every_figure_and_number(tiny_report):
  workdir, docs, files = tiny_report
  names = sorted(os.path.relpath(f, docs) for f in files)
  assert names == sorted(
      [f'figures/{n}.png' for n in ('explained_stress', 'embedding_arch', 'embedding_init',
                                    'factor_ratios', 'progress_by_width', 'init_join')]
      + ['reproduction_numbers.md', 'reproduction_numbers.json'])
  with open(os.path.join(docs, 'reproduction_numbers.json')) as f:
    numbers = json.load(f)['findings']
  es = np.asarray(numbers['explained_stress'])
  assert np.all(np.diff(es) >= -1e-9) and 0 < es[0] and es[-1] <= 1
  factors = {r['factor'] for r in numbers['factor_rows']}
  assert {'seed', 'width', 'learning_rate', 'augment', 'random_labels', 'subset'} <= factors
  text = open(os.path.join(docs, 'reproduction_numbers.md')).read()
  assert '## 4. Initialisations' in text and 'ES_k' in text


def test_init_start_points_match_the_store(tiny_report, d_b_numpy):
  """Step-0 distance to ignorance, recomputed in NumPy from the stored probabilities."""
  workdir, docs, _ = tiny_report
  traj = ensembles.load_trajectories(workdir)
  with open(os.path.join(docs, 'reproduction_numbers.json')) as f:
    inits = json.load(f)['findings']['inits']['mlp']
  probs = traj.probs('train')[:, 0]
  uniform = np.full(probs.shape[1:], 1.0 / probs.shape[-1])
  for variant in ('base', 'random_labels', 'subset'):
    rows = [e for e, m in enumerate(traj.members)
            if m['init'] == ('default' if variant == 'base' else variant)
            and m['width'] == config_lib.TINY_WIDTHS[0] and m['learning_rate']
            == config_lib.BASE_LEARNING_RATE and not m['augment']]
    expected = np.mean([d_b_numpy(probs[e], uniform) for e in rows])
    np.testing.assert_allclose(inits['start_to_ignorance'][variant], expected, rtol=1e-4)
  # Pretraining on a subset moves step 0 toward truth; the default init starts near ignorance.
  assert inits['start_progress']['subset'][0] > inits['start_progress']['base'][0] + 0.1


@pytest.mark.slow  # 15-22 s each at load average 2.4-2.8 (cohorts to compile, then the analysis)
@pytest.mark.parametrize('dataset, has_augment', [('mnist1d', False), ('mnist5k', True)])
def test_tagged_tiny_report(tmp_path, data_dir, dataset, has_augment):
  """A tagged sweep writes its own files (digits' are not overwritten); 1-D has no augment."""
  workdir, docs = str(tmp_path / 'store'), str(tmp_path / 'docs')
  config = config_lib.get_config(f'{dataset}_tiny')
  config.data.data_dir = data_dir
  config.train.log_every_seconds = 1e9
  ensembles.train_and_record(config, workdir)
  files = reproduction.regenerate(workdir, docs, f'{dataset}_tiny', train=False, command='test')
  names = sorted(os.path.relpath(f, docs) for f in files)
  assert names == sorted(
      [f'figures/{dataset}_{n}.png' for n in ('explained_stress', 'embedding_arch',
                                              'embedding_init', 'factor_ratios',
                                              'progress_by_width', 'init_join')]
      + [f'reproduction_numbers_{dataset}.md', f'reproduction_numbers_{dataset}.json'])
  with open(os.path.join(docs, f'reproduction_numbers_{dataset}.json')) as f:
    numbers = json.load(f)
  assert numbers['run']['dataset'] == dataset
  factors = {r['factor'] for r in numbers['findings']['factor_rows']}
  assert ('augment' in factors) == has_augment
  assert {'width', 'random_labels', 'subset'} <= factors
