"""Pair attribution, seed groups and the factor table on cases with a known answer."""

import csv
import io
import itertools

import numpy as np
import pytest

from ensembles import analysis
from ensembles.analysis import factors


def hparams(**changes):
  base = dict(arch='mlp', width=64, depth=2, optimizer='sgd', momentum=0.9, nesterov=False,
              learning_rate=0.1, batch_size=64, weight_decay=0.0, augment=False, init='default',
              init_scale=1.0, dataset='digits', schedule='cosine', epochs=5, seed=0)
  return {**base, **changes}


@pytest.mark.parametrize('changes, expected', [
    (dict(seed=1), 'seed'),
    (dict(learning_rate=0.2), 'learning_rate'),
    (dict(learning_rate=0.2, seed=3), 'learning_rate'),
    (dict(width=128), 'arch'),
    (dict(nesterov=True), 'optimizer'),
    (dict(init_scale=0.5), 'init'),
    (dict(augment=True), 'augment'),
    (dict(batch_size=128), 'batch_size'),
    (dict(weight_decay=5e-4), 'weight_decay'),
    (dict(dataset='mnist1d'), 'other'),
    (dict(arch='cnn', learning_rate=0.2), 'several'),
    ({}, None),
])
def test_pair_factor(changes, expected):
  assert analysis.pair_factor(hparams(), hparams(**changes)) == expected


def test_seed_groups_join_members_that_differ_in_seed_only():
  members = [hparams(seed=0), hparams(seed=1), hparams(arch='cnn', seed=0), hparams(seed=2),
             hparams(arch='cnn', seed=5), hparams(learning_rate=0.3)]
  np.testing.assert_array_equal(analysis.seed_groups(members), [0, 0, 1, 0, 1, 2])


def test_factor_table_on_additive_distances():
  # d = 1 [arch differs] + 0.1 [lr differs] + 0.01 [seed differs], 2 x 2 x 3 members.
  members = [hparams(arch=a, learning_rate=lr, seed=s)
             for a, lr, s in itertools.product(('mlp', 'cnn'), (0.1, 0.2), (0, 1, 2))]
  d = np.array([[1.0 * (a['arch'] != b['arch']) + 0.1 * (a['learning_rate'] != b['learning_rate'])
                 + 0.01 * (a['seed'] != b['seed']) for b in members] for a in members])
  table = analysis.factor_table(d, members)
  # Arch pairs (same lr): 2 lr x 3 x 3 seed combinations, 6 of 9 with different seeds.
  arch = table.row('arch')
  assert arch.num_pairs == 2 * 9
  assert arch.mean == pytest.approx(1.0 + 0.01 * 6 / 9)
  assert table.row('learning_rate').mean == pytest.approx(0.1 + 0.01 * 6 / 9)
  seed = table.row('seed')
  assert (seed.num_pairs, seed.mean, seed.std) == (4 * 3, pytest.approx(0.01), pytest.approx(0))
  assert arch.ratio_to_seed == pytest.approx(arch.mean / 0.01)
  assert [r.factor for r in table.rows] == ['several', 'arch', 'learning_rate', 'seed']
  with pytest.raises(KeyError, match='present'):
    table.row('augment')


def test_factor_table_renders_csv_and_markdown():
  members = [hparams(seed=0), hparams(seed=1), hparams(augment=True)]
  table = analysis.factor_table(np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0.0]]), members)
  rows = list(csv.reader(io.StringIO(table.to_csv())))
  assert rows[0] == ['factor', 'keys', 'num_pairs', 'mean', 'std', 'median', 'ratio_to_seed',
                     'note']
  assert [r[0] for r in rows[1:]] == ['augment', 'seed'] and rows[1][7] == ''
  assert table.confounded == ()  # augment varies alone (members 0 and 2).
  assert float(rows[1][3]) == pytest.approx(2.5) and float(rows[1][6]) == pytest.approx(2.5)
  markdown = table.to_markdown().splitlines()
  assert len(markdown) == 4 and markdown[2].startswith('| augment | augment | 2 | 2.5 |')


def test_a_factor_that_never_varies_alone_is_named_as_confounded():
  # The quickstart's design: each optimizer with learning rates of its own scale, x arch x seed.
  members = [hparams(arch=a, optimizer=o, learning_rate=lr, seed=s)
             for a in ('mlp', 'cnn')
             for o, rates in (('sgd', (0.02, 0.05)), ('adam', (0.001, 0.003)))
             for lr in rates for s in (0, 1)]
  table = analysis.factor_table(np.ones((len(members), len(members))), members)
  assert {r.factor for r in table.rows} == {'arch', 'learning_rate', 'seed', 'several'}
  assert table.confounded == (
      analysis.Confounded('optimizer', ('learning_rate',), ('arch', 'learning_rate')),)
  note = ("optimizer: confounded with learning_rate (never varies alone in this sweep; its "
          "pairs count under 'several').")
  assert table.to_markdown().splitlines()[-1] == note
  last = list(csv.reader(io.StringIO(table.to_csv())))[-1]
  assert last[:3] == ['optimizer', 'optimizer momentum nesterov', '0'] and last[7] == note[11:-1]
  with pytest.raises(KeyError, match='optimizer.*confounded with learning_rate'):
    table.row('optimizer')
  # One Nesterov member with an SGD learning rate: the optimizer then varies alone, against the
  # two mlp sgd members at 0.02 (seeds 0 and 1).
  table = analysis.factor_table(np.ones((len(members) + 1,) * 2),
                                members + [hparams(optimizer='nesterov', learning_rate=0.02)])
  assert table.confounded == () and table.row('optimizer').num_pairs == 2


def test_a_factor_that_moves_with_different_ones_is_confounded_with_none_in_particular():
  members = [hparams(), hparams(augment=True, arch='cnn'), hparams(augment=True, batch_size=32)]
  confounded = analysis.factor_table(np.ones((3, 3)), members).confounded
  assert [c.factor for c in confounded] == ['arch', 'augment', 'batch_size']
  augment = confounded[1]
  assert (augment.always_with, augment.varies_with) == ((), ('arch', 'batch_size'))
  assert augment.note().startswith('confounded (never varies alone in this sweep, always with '
                                   'one of arch, batch_size;')


def test_factor_table_skips_pairs_without_distance():
  members = [hparams(seed=0), hparams(seed=1), hparams(seed=2)]
  d = np.array([[0, np.nan, 2], [np.nan, 0, 4], [2, 4, 0.0]])
  assert analysis.factor_table(d, members).row('seed').num_pairs == 2
  with pytest.raises(ValueError, match=r'expected \(3, 3\)'):
    analysis.factor_table(d[:2], members)


def test_architecture_dominates_on_synthetic_trajectories(fake_store):
  store = fake_store(seeds=(0, 1, 2))
  table = analysis.factor_analysis(store.probs('train'), store.labels('train'), store.members,
                                   grid=np.linspace(0.15, 0.6, 6))
  arch, lr, seed = table.row('arch'), table.row('learning_rate'), table.row('seed')
  # The learning rate only changes the speed: at equal progress it is as close as a new seed.
  assert arch.ratio_to_seed > 5
  assert lr.ratio_to_seed < 2
  assert seed.num_pairs == 4 * 3
  assert table.rows[0].factor in ('arch', 'several')
  assert factors.SEED_ONLY == 'seed'


def test_stores_mapped_jointly_are_a_factor_of_their_own():
  a, b = dict(arch='mlp', seed=0, store='jax'), dict(arch='mlp', seed=0, store='torch')
  assert factors.pair_factor(a, b) == 'store'
  assert factors.pair_factor(a, dict(b, seed=1)) == 'store'
  assert factors.pair_factor(a, dict(b, arch='cnn')) == factors.SEVERAL
