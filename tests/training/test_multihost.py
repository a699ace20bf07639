"""Tests of ensembles.training.multihost on one process: every cross-process step is a no-op.

(Several processes: ``tests/test_scale_out.py``.)
"""

import itertools

import jax
import pytest
from jax.experimental import multihost_utils

from ensembles.training import multihost


@pytest.fixture
def no_collectives(monkeypatch):
  """Any cross-process call fails the test: one process must not need one."""
  def refuse(*args, **kwargs):
    raise AssertionError('a cross-process collective was called on one process')
  for name in ('sync_global_devices', 'broadcast_one_to_all', 'process_allgather'):
    monkeypatch.setattr(multihost_utils, name, refuse)


def test_one_process_is_the_leader():
  assert jax.process_count() == 1 and multihost.is_leader()


def test_agree_returns_its_inputs(no_collectives):
  for stop, due, epochs in itertools.product((False, True), (False, True), (1, 3, 250)):
    agreed = multihost.agree(stop, due, epochs)
    assert agreed == (stop, due, epochs)
    assert [type(v) for v in agreed] == [bool, bool, int]


def test_leader_failed_passes_its_input_through(no_collectives):
  assert multihost.leader_failed(True) is True
  assert multihost.leader_failed(False) is False


def test_say_prints_on_process_zero(capsys):
  multihost.say('cohort 1/2: resuming at step 40')
  assert capsys.readouterr().out == 'cohort 1/2: resuming at step 40\n'


def test_say_is_silent_on_other_processes(capsys, monkeypatch):
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  assert not multihost.is_leader()
  multihost.say('not shown')
  assert capsys.readouterr().out == ''


def test_sync_is_a_no_op(no_collectives):
  assert multihost.sync('before-manifest') is None
