"""Tests of ensembles.analysis.design: pair statistics of a one-factor-at-a-time design, checked
against brute-force loops and float64 NumPy."""

import itertools

import numpy as np
import pytest

from ensembles.analysis import design


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


def test_init_join_distance_to_base_mean_matches_numpy(d_b_numpy):
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
      expected = np.mean([d_b_numpy(probs[e, g], mean) for e in runs]) if runs else np.nan
      np.testing.assert_allclose(join.distance[v][g], expected, rtol=1e-4, atol=1e-7)
  uniform = np.full((num_n, num_c), 1.0 / num_c)
  np.testing.assert_allclose(join.start_to_ignorance['subset'],
                             np.mean([d_b_numpy(start[e], uniform) for e in (4, 5)]),
                             rtol=1e-4)
  np.testing.assert_allclose(join.start_progress['subset'], (0.45, 0.05))


def test_check_labels_names_the_member():
  members = [dict(width=4, seed=0), dict(width=4, seed=1)]
  label = design.Label('mlp', 'width')
  with pytest.raises(ValueError, match=r'member 0 .*width'):
    design.check_labels(members, [label, label], {label: dict(width=8)})
