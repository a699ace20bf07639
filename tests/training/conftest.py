"""Fixtures shared by the trainer's tests: small members and their cohort program on digits."""

import pytest

import ensembles
from ensembles.training import data as data_lib
from ensembles.training import program as program_lib
from ensembles.training import sweep as sweep_lib


@pytest.fixture
def make_members():
  """A factory of members: ``make_members(seed=(0, 1), arch=('cnn',))``.

  Width-16, depth-2 networks, 20 epochs of batch 32 on a cosine schedule; keyword arguments
  are sweep fields.
  """
  def make(**sweep):
    config = ensembles.default_config()
    config.hparams.update(dict(width=16, depth=2, epochs=20, batch_size=32, schedule='cosine'))
    for name, values in sweep.items():
      config.sweep[name] = values
    return sweep_lib.expand_members(config)
  return make


@pytest.fixture
def cohort_program(data_dir):
  """A factory: ``cohort_program(hparams)`` -> (the one cohort's program, digits on device).

  ``hparams`` must form one cohort.
  """
  def make(hparams):
    dataset = data_lib.load_dataset('digits', data_dir=data_dir)
    cohort = sweep_lib.make_cohorts(hparams)[0]
    assert cohort.size == len(hparams)
    program = program_lib.CohortProgram.for_cohort(cohort, dataset.info, eval_batch_size=256)
    return program, data_lib.to_device(dataset)
  return make
