"""Tests of ensembles.training.sweep: sweep expansion, member order, cohorts and bad configs
(no training)."""

import importlib
import itertools

import ml_collections
import pytest

import ensembles
from ensembles.configs import common as config_common
from ensembles.training import sweep as sweep_lib


def _config(**sweep):
  config = ensembles.default_config()
  for name, values in sweep.items():
    config.sweep[name] = values
  return config


def test_members_are_the_cartesian_product_in_documented_order():
  config = _config(seed=(0, 1, 2), learning_rate=(0.1, 0.2), arch=('mlp', 'cnn'))
  members = sweep_lib.expand_members(config)
  # Alphabetical field order (arch, learning_rate, seed), last fastest.
  expected = list(itertools.product(('mlp', 'cnn'), (0.1, 0.2), (0, 1, 2)))
  assert [(m.arch, m.learning_rate, m.seed) for m in members] == expected
  # Unswept fields keep the defaults.
  assert {m.batch_size for m in members} == {config.hparams.batch_size}


def test_empty_sweep_is_one_member_with_the_defaults():
  members = sweep_lib.expand_members(ensembles.default_config())
  assert len(members) == 1
  assert members[0].to_dict() == dict(config_common.default_hparams())


def test_cohorts_group_by_program_shape_only():
  config = _config(arch=('mlp', 'cnn'), optimizer=('sgd', 'adam'), learning_rate=(0.1, 0.01),
                   augment=(False, True), seed=(0, 1), schedule=('constant', 'cosine'))
  members = sweep_lib.expand_members(config)
  cohorts = sweep_lib.make_cohorts(members)
  assert len(cohorts) == 4  # arch x optimizer
  assert sorted(i for c in cohorts for i in c.members) == list(range(len(members)))
  for cohort in cohorts:
    assert cohort.size == 16
    for h in cohort.hparams:
      assert h.cohort_key() == cohort.shared.cohort_key()
    # Everything traced varies inside a cohort.
    assert len({(h.learning_rate, h.augment, h.seed, h.schedule) for h in cohort.hparams}) == 16


def test_nesterov_flag_is_the_nesterov_optimizer():
  config = _config(nesterov=(False, True))
  a, b = sweep_lib.expand_members(config)
  assert (a.optimizer, b.optimizer) == ('sgd', 'nesterov')
  assert len(sweep_lib.make_cohorts([a, b])) == 2


@pytest.mark.parametrize('sweep, message', [
    (dict(arch=('mlp', 'transformer')), "member 1 (arch='transformer') hparams.arch"),
    (dict(dataset=('imagenet',)), 'hparams.dataset: unknown value'),
    (dict(optimizer=('rmsprop',)), 'accepted: sgd, nesterov, adam, adamw'),
    (dict(seed=()), 'config.sweep.seed is empty'),
    (dict(seed=3), 'must be a sequence'),
    (dict(batch_size=(32, 0)), 'member 1 (batch_size=0) hparams.batch_size=0: must be > 0'),
    (dict(epochs=(-1,)), 'hparams.epochs=-1: must be > 0'),
    (dict(epochs=(1, 2)), 'share one recording grid'),
    (dict(learning_rate=(float('nan'),)), 'learning_rate=nan: must be >= 0'),
    (dict(momentum=(1.0,)), 'momentum=1.0: must be in [0, 1)'),
    (dict(width=('wide',)), "'wide' is not a valid int"),
    (dict(learning_rte=(0.1,)), "config.sweep has keys ['learning_rte'] that are not hparams"),
])
def test_bad_sweeps_name_the_key_and_member(sweep, message):
  with pytest.raises(ensembles.ConfigError) as error:
    sweep_lib.expand_members(_config(**sweep))
  assert message in str(error.value)


def test_unknown_hparam_in_defaults():
  config = ensembles.default_config()
  config.unlock() if hasattr(config, 'unlock') else None
  config.hparams = ml_collections.ConfigDict(dict(config.hparams, dropout=0.1))
  with pytest.raises(ensembles.ConfigError, match=r"config.hparams has unknown keys \['dropout'\]"):
    sweep_lib.expand_members(config)


def test_variants_pair_values_that_belong_together():
  config = _config(seed=(0, 1))
  config.variants = (dict(optimizer='sgd', learning_rate=(0.05, 0.1)),
                     dict(optimizer='adam', learning_rate=0.001))
  members = sweep_lib.expand_members(config)
  assert [(m.optimizer, m.learning_rate, m.seed) for m in members] == [
      ('sgd', 0.05, 0), ('sgd', 0.05, 1), ('sgd', 0.1, 0), ('sgd', 0.1, 1),
      ('adam', 0.001, 0), ('adam', 0.001, 1)]


@pytest.mark.parametrize('variants, message', [
    ((dict(seed=(2,)),), "config.variants[0] and config.sweep both set ['seed']"),
    ((dict(learning_rte=0.1),), "config.variants[0] has keys ['learning_rte']"),
    ((dict(width=()),), 'config.variants[0].width is empty'),
    (('sgd',), "config.variants[0]='sgd': must be a dict"),
])
def test_bad_variants(variants, message):
  config = _config(seed=(0, 1))
  config.variants = variants
  with pytest.raises(ensembles.ConfigError) as error:
    sweep_lib.expand_members(config)
  assert message in str(error.value)


def test_shadowed_hparams_are_those_the_sweep_or_every_variant_sets():
  config = _config(seed=(0, 1))
  config.variants = (dict(optimizer='sgd', learning_rate=(0.05, 0.1)), dict(optimizer='adam'))
  # learning_rate is not shadowed: the adam members read it from config.hparams.
  assert sweep_lib.shadowed_hparams(config) == {
      'seed': {'sweep.seed': (0, 1)},
      'optimizer': {'variants[0].optimizer': 'sgd', 'variants[1].optimizer': 'adam'}}


@pytest.mark.parametrize('arg, overrides, message', [
    ('quickstart:tiny', {'hparams.learning_rate': -0.1},
     '--config.hparams.learning_rate=-0.1 would be ignored: every member takes learning_rate '
     'from config.variants (variants[0]: 0.05), not from config.hparams. Set it there instead: '
     '--config.variants[0].learning_rate=-0.1.'),
    ('quickstart', {'hparams.optimizer': 'lamb'},
     "config.variants (variants[0]: 'sgd', variants[1]: 'adam')"
     ', not from config.hparams. Set it there instead: --config.variants[0].optimizer=lamb '
     '--config.variants[1].optimizer=lamb.'),
    ('mnist1d:tiny', {'hparams.optimizer': 'lamb'},
     "--config.hparams.optimizer=lamb would be ignored: every member takes optimizer from "
     "config.sweep.optimizer=('sgd',), not from config.hparams. Set it there instead: "
     """--config.sweep.optimizer="('lamb',)" (a tuple of the values to sweep)."""),
    ('mnist1d:tiny', {'hparams': {'epochs': 1, 'learning_rate': 0.1}},  # --config.hparams='{..}'
     "--config.sweep.learning_rate='(0.1,)'"),
])
def test_an_override_that_no_member_would_use_is_refused(arg, overrides, message):
  name, _, config_arg = arg.partition(':')
  config = importlib.import_module(f'ensembles.configs.{name}').get_config(config_arg or None)
  with pytest.raises(ensembles.ConfigError) as error:
    sweep_lib.check_overrides(config, overrides)
  assert message in str(error.value)


def test_overrides_that_members_use_pass():
  from ensembles.configs import mnist1d, reproduction
  overrides = {'hparams.epochs': 1, 'sweep.learning_rate': (0.1,), 'record.dtype': 'float16'}
  sweep_lib.check_overrides(mnist1d.get_config('tiny'), overrides)
  # Some of reproduction's variants set the learning rate, the others read config.hparams'.
  sweep_lib.check_overrides(reproduction.get_config('tiny'), {'hparams.learning_rate': 0.1})
