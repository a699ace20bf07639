"""Tests of ensembles.training.config: bad engine settings and bad input fail before anything
is written."""

import os

import pytest

import ensembles
from ensembles import training


def test_unknown_compute_dtype_is_a_config_error(small_config, tmp_path):
  config = small_config()
  config.train.compute_dtype = 'float16'
  with pytest.raises(ensembles.ConfigError, match=r"config.train.compute_dtype='float16': "
                                                  'accepted float32, bfloat16'):
    ensembles.train_and_record(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.parametrize('section, key, value, message', [
    ('hparams', 'batch_size', 5000,
     'hparams.batch_size=5000 is larger than the 1438 training examples'),
    ('hparams', 'arch', 'resnet', 'cohort 0'),  # depth 1 is not a Wide-ResNet depth.
    ('train', 'member_block', -1, r'config.train.member_block=-1: accepted 0'),
])
def test_bad_input_fails_before_anything_is_written(small_config, tmp_path, section, key, value,
                                                    message):
  config = small_config()
  config[section][key] = value
  workdir = os.path.join(tmp_path, 'run')
  with pytest.raises(ensembles.ConfigError, match=message):
    ensembles.train_and_record(config, workdir)
  assert not os.path.exists(workdir)


def test_the_manifest_config_holds_no_hparams_value_that_no_member_used():
  from ensembles.configs import quickstart
  config = quickstart.get_config('tiny')
  config.hparams.learning_rate = 0.3  # As a notebook might: the variant's 0.05 wins.
  read = training.read_config(config)
  assert {m.learning_rate for m in read.sweep.members} == {0.05}
  hparams = read.source['hparams']
  assert hparams['learning_rate'] is None and hparams['optimizer'] is None  # from variants[0]
  assert hparams['arch'] is None and hparams['seed'] is None  # from config.sweep
  assert hparams['width'] == 8 and read.source['variants'][0]['learning_rate'] == 0.05
