"""Tests of ensembles.configs.reproduction: the reproduction sweep's design and its tags."""

import pytest

import ensembles
from ensembles.analysis import design
from ensembles.configs import reproduction as config_lib


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
