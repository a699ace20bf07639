"""Tests of ensembles.training.placement: member blocks fitted to the devices' memory."""

import dataclasses

import numpy as np
import pytest

import ensembles
from ensembles.training import devices
from ensembles.training import experiment
from ensembles.training import placement
from ensembles.training import program as program_lib


# Slow: an 8-member cnn compiled at every block size, several times. By default the next test
# fits a cohort through train_and_record (a block halved to fit, a user's block that does not
# fit warned about, one that never fits refused); this one checks compile_to_fit's thresholds
# block by block.
@pytest.mark.slow
def test_compile_to_fit_halves_member_blocks_until_the_programs_fit(cohort_program, make_members):
  members = make_members(seed=tuple(range(8)), arch=('cnn',))
  program, dataset = cohort_program(members)
  program = dataclasses.replace(program, member_block=0)  # All 4 of a device at once.
  mesh = devices.member_mesh()
  hp, dataset, probes = placement.place(
      mesh, program_lib.member_hparams(members), dataset,
      placement.make_probes(dataset, np.arange(200), np.arange(100)))
  need = {}  # XLA's analysis per block: a block's activations scale with its members.
  for block in (4, 2, 1):
    compiled = dataclasses.replace(program, member_block=block).compile(hp, dataset, probes, mesh)
    need[block] = placement.peak_bytes(compiled)
  assert need[4] > need[2] > need[1]

  def fit(limit):
    return placement.compile_to_fit(program, hp, dataset, probes, mesh, limit)[0]

  assert fit(None).member_block == 0  # No limit (CPU): left as it is.
  assert fit(need[4] / placement.MEMORY_FIT_FRACTION).member_block == 0
  assert fit((need[2] + 1) / placement.MEMORY_FIT_FRACTION).member_block == 2
  assert fit(need[1] / placement.MEMORY_FIT_FRACTION).member_block == 1
  with pytest.raises(ValueError, match='4 members per device need .* even one at a time'):
    fit((need[1] - 1) / placement.MEMORY_FIT_FRACTION)


def test_a_cohort_too_big_for_device_memory_trains_in_smaller_blocks(small_config, tmp_path,
                                                                     monkeypatch, capsys):
  """Devices that report their memory (GPUs, TPUs; faked here) get member blocks that fit."""
  config = small_config(epochs=1, seed=(0, 1, 2, 3))  # mlps: CPU's default blocks hold 8.
  config.train.member_block = 2  # All 2 members of a device at once.
  reference = str(tmp_path / 'reference')
  ensembles.train_and_record(config, reference)
  config.train.member_block = 1
  compiled, *_ = experiment.plan(config).compile_cohort(0, devices.member_mesh())
  one_at_a_time = placement.peak_bytes(compiled)

  def device_holds(limit):
    monkeypatch.setattr(devices, 'memory_limit_bytes', lambda mesh: limit)

  device_holds(int(one_at_a_time / placement.MEMORY_FIT_FRACTION) - 1)
  config.train.member_block = 2  # Set by the user: only a warning when it does not fit.
  with pytest.warns(UserWarning, match='member_block=2 needs .* it may run out of memory'):
    ensembles.train_and_record(config, str(tmp_path / 'warned'))
  config.train.member_block = 0  # Not set: fitted to the device.
  with pytest.raises(ensembles.ConfigError, match=r'cohort 0 \(.*\): 2 members per device'):
    ensembles.train_and_record(config, str(tmp_path / 'too_small'))
  device_holds(int(one_at_a_time / placement.MEMORY_FIT_FRACTION) + 1)
  capsys.readouterr()
  ensembles.train_and_record(config, str(tmp_path / 'fitted'))
  assert 'trains its members in blocks of 1 per device to fit' in capsys.readouterr().out
  a, b = (ensembles.load_trajectories(str(tmp_path / w)) for w in ('reference', 'fitted'))
  np.testing.assert_allclose(a.probs(), b.probs(), rtol=1e-5, atol=1e-6)
