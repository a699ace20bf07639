"""The reproduction report: its sweep design, its pair statistics and the whole command on tiny."""

import itertools
import json
import os

import numpy as np
import pytest

import ensembles
from ensembles.analysis import design
from ensembles.reproduction import report as reproduction
from ensembles.configs import reproduction as config_lib


def _d_b_numpy(p_NxC: np.ndarray, q_NxC: np.ndarray) -> float:
  """Intensive Bhattacharyya distance in float64 NumPy (independent of analysis.distances)."""
  p, q = np.asarray(p_NxC, np.float64), np.asarray(q_NxC, np.float64)
  return float(-np.mean(np.log(np.sum(np.sqrt(p * q), axis=-1))))


# ----------------------------------------------------------------------------------------------
# The sweep design.


@pytest.mark.parametrize('arg, dataset, archs, num_variants', [
    ('', 'digits', {'mlp', 'cnn', 'resnet', 'vit', 'convmixer'}, len(config_lib.VARIANTS)),
    # mnist1d: the 1-D families only, and no augmentation variant (a no-op on 1-D signals).
    ('mnist1d', 'mnist1d', {'mlp', 'cnn'}, len(config_lib.VARIANTS) - 1),
    # mnist5k: the two families cheap enough on 28x28 for a CPU, every variant.
    ('mnist5k', 'mnist5k', {'mlp', 'cnn'}, len(config_lib.VARIANTS)),
])
def test_every_variant_changes_one_factor_of_its_base(arg, dataset, archs, num_variants):
  members = ensembles.expand_members(config_lib.get_config(arg))
  labels = [k for k in config_lib.variants(arg) for _ in config_lib.SEEDS]
  assert len(members) == len(labels) == len(archs) * num_variants * len(config_lib.SEEDS)
  by_label = {}
  for m, label in zip(members, labels):
    by_label.setdefault(label, []).append(m.to_dict())
  for (family, variant), runs in by_label.items():
    assert sorted(r['seed'] for r in runs) == list(config_lib.SEEDS), (family, variant)
    base = by_label[family, design.BASE][0]
    differ = {k for k in base if k != 'seed' and base[k] != runs[0][k]}
    expected = {'base': set(), 'width': {'width'}, 'learning_rate': {'learning_rate'},
                'nesterov': {'optimizer', 'nesterov'}, 'adam': {'optimizer', 'learning_rate'},
                'batch_size': {'batch_size'}, 'weight_decay': {'weight_decay'},
                'augment': {'augment'}, 'random_labels': {'init'},
                'subset': {'init'}}[variant]
    assert differ == expected, (family, variant, differ)
  assert {m.arch for m in members} == archs
  assert {m.dataset for m in members} == {dataset}


def test_config_rejects_unknown_argument():
  with pytest.raises(ValueError, match="accepted: .*'mnist1d'"):
    config_lib.get_config('huge')
  with pytest.raises(ValueError, match="'mnist5k', 'mnist5k_tiny'"):
    config_lib.get_config('mnist5k_huge')


@pytest.mark.parametrize('arg, num_variants', [('mnist1d', 9), ('mnist5k', 10)])
def test_tagged_sweep_passes_validation(data_dir, arg, num_variants):
  """Every member is a model the dataset's inputs fit (checked before anything compiles)."""
  config = config_lib.get_config(arg)
  config.data.data_dir = data_dir
  plan = ensembles.plan(config)
  assert len(plan.members) == 2 * num_variants * len(config_lib.SEEDS)


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


# ----------------------------------------------------------------------------------------------
# Pair statistics.


def _brute_force_stats(d_GxExE, pairs, seed_pairs):
  """(pairs used, mean d_B, ratio) by explicit loops over pairs and progress values."""
  num_g = d_GxExE.shape[0]
  seed_G = []
  for g in range(num_g):
    values = [d_GxExE[g, i, j] for i, j in seed_pairs if np.isfinite(d_GxExE[g, i, j])]
    seed_G.append(np.mean(values) if values else np.nan)
  means, refs = [], []
  for i, j in pairs:
    gs = [g for g in range(num_g) if np.isfinite(d_GxExE[g, i, j]) and np.isfinite(seed_G[g])]
    if gs:
      means.append(np.mean([d_GxExE[g, i, j] for g in gs]))
      refs.append(np.mean([seed_G[g] for g in gs]))
  return len(means), np.mean(means), np.mean(means) / np.mean(refs)


def test_factor_rows_match_brute_force():
  rng = np.random.default_rng(0)
  seeds = [0, 1, 2] * 3
  variants = ['base'] * 3 + ['width'] * 3 + ['adam'] * 3
  labels = [design.Label('mlp', v) for v in variants]
  d = rng.uniform(0.1, 1.0, (4, 9, 9))
  d = (d + d.transpose(0, 2, 1)) / 2
  d[:, 2, 5] = d[:, 5, 2] = np.nan   # a pair never comparable is left out
  d[:2, 6:, :] = d[:2, :, 6:] = np.nan  # the adam runs reach only the last two values
  d[0, 0, :] = d[0, :, 0] = np.nan  # a base run that starts late
  rows = {r.factor: r for r in design.factor_rows(d, labels, seeds, 'mlp')}
  base = [0, 1, 2]
  seed_pairs = list(itertools.combinations(base, 2))
  n, mean, ratio = _brute_force_stats(d, seed_pairs, seed_pairs)
  assert rows['seed'].other_seed.num_pairs == n == 3
  np.testing.assert_allclose([rows['seed'].other_seed.mean, rows['seed'].other_seed.ratio_to_seed],
                             [mean, ratio])
  for name in ('width', 'adam'):
    other = [i for i in range(9) if variants[i] == name]
    for same, stats in ((True, rows[name].same_seed), (False, rows[name].other_seed)):
      pairs = [(i, j) for i in base for j in other if (seeds[i] == seeds[j]) == same]
      n, mean, ratio = _brute_force_stats(d, pairs, seed_pairs)
      assert stats.num_pairs == n, (name, same)
      np.testing.assert_allclose([stats.mean, stats.ratio_to_seed], [mean, ratio])
  assert rows['width'].same_seed.num_pairs == 2  # (2, 5) is never comparable


def test_arch_rows_pool_seed_pairs_within_families():
  rng = np.random.default_rng(2)
  families = ['mlp', 'mlp', 'cnn', 'cnn', 'vit', 'vit']
  seeds = [0, 1] * 3
  d = rng.uniform(0.1, 1.0, (3, 6, 6))
  d = (d + d.transpose(0, 2, 1)) / 2
  arch, seed = design.arch_rows(d, families, seeds)
  seed_pairs = [(0, 1), (2, 3), (4, 5)]
  across = [(i, j) for i, j in itertools.combinations(range(6), 2) if families[i] != families[j]]
  for same, stats in ((True, arch.same_seed), (False, arch.other_seed)):
    pairs = [(i, j) for i, j in across if (seeds[i] == seeds[j]) == same]
    n, mean, ratio = _brute_force_stats(d, pairs, seed_pairs)
    assert stats.num_pairs == n == 6
    np.testing.assert_allclose([stats.mean, stats.ratio_to_seed], [mean, ratio])
  np.testing.assert_allclose(seed.other_seed.ratio_to_seed, 1.0)


def test_init_join_distance_to_base_mean_matches_numpy():
  rng = np.random.default_rng(1)
  num_e, num_g, num_n, num_c = 6, 3, 7, 4
  probs = rng.dirichlet(np.ones(num_c), (num_e, num_g, num_n)).astype(np.float32)
  reached = np.ones((num_e, num_g), bool)
  reached[4, 0] = reached[5, 0] = False  # the subset runs start later
  variants = np.asarray(['base', 'base', 'base', 'random_labels', 'subset', 'subset'])
  cmp = design.Compared(np.arange(num_e), np.linspace(0.1, 0.5, num_g), probs, reached,
                              np.zeros((num_g, num_e, num_e)))
  start = rng.dirichlet(np.ones(num_c), (num_e, num_n)).astype(np.float32)
  join = design.init_join(cmp, variants, start, np.arange(num_e) / 10.0)
  for g in range(num_g):
    mean = probs[:3, g].astype(np.float64).mean(axis=0)
    for v in ('base', 'random_labels', 'subset'):
      runs = [e for e in range(num_e) if variants[e] == v and reached[e, g]]
      expected = np.mean([_d_b_numpy(probs[e, g], mean) for e in runs]) if runs else np.nan
      np.testing.assert_allclose(join.distance[v][g], expected, rtol=1e-4, atol=1e-7)
  uniform = np.full((num_n, num_c), 1.0 / num_c)
  np.testing.assert_allclose(join.start_to_ignorance['subset'],
                             np.mean([_d_b_numpy(start[e], uniform) for e in (4, 5)]),
                             rtol=1e-4)
  np.testing.assert_allclose(join.start_progress['subset'], (0.45, 0.05))


def test_check_labels_names_the_member():
  members = [dict(width=4, seed=0), dict(width=4, seed=1)]
  label = design.Label('mlp', 'width')
  with pytest.raises(ValueError, match=r'member 0 .*width'):
    design.check_labels(members, [label, label], {label: dict(width=8)})


# ----------------------------------------------------------------------------------------------
# The whole command on the tiny sweep.


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


def test_init_start_points_match_the_store(tiny_report):
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
    expected = np.mean([_d_b_numpy(probs[e], uniform) for e in rows])
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
