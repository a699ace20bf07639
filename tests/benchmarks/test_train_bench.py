"""Smoke test of `python -m benchmarks.train --quick`: every method runs and the tables come out.

A benchmark, not a timed test: nothing here asserts a wall time or a throughput.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Generous: the smoke takes ~40 s on 2 idle cores; a loaded CI machine may need more.
_TIMEOUT_S = 300


@pytest.fixture(scope='module')
def quick_table(data_dir, tmp_path_factory) -> str:
  out = tmp_path_factory.mktemp('bench') / 'train.md'
  done = subprocess.run(
    [sys.executable, '-m', 'benchmarks.train', '--quick', '--data_dir', data_dir, '--out',
     str(out)],
    capture_output=True, text=True, timeout=_TIMEOUT_S, cwd=_ROOT)
  assert done.returncode == 0, done.stderr[-3000:]
  text = out.read_text()
  assert text in done.stdout  # The same table is printed and written.
  return text


def _rows(table: str) -> list[list[str]]:
  return [[cell.strip() for cell in line.strip('|').split('|')]
          for line in table.splitlines() if line.startswith('| ') and '---' not in line]


def test_quick_throughput_rows_for_every_method(quick_table):
  assert '- versions: python' in quick_table and 'jax 0.' in quick_table
  rows = _rows(quick_table.split('## Throughput')[1].split('##')[0])
  methods = {(row[0], row[2].split(' ')[0]) for row in rows[1:]}
  expected = {('mlp-digits', 'ensembles'), ('mlp-digits', 'jax-one-at-a-time'),
              ('cnn-digits', 'ensembles'), ('cnn-digits', 'jax-one-at-a-time')}
  if importlib.util.find_spec('torch') is not None:
    expected |= {('mlp-digits', 'torch-func-vmap'), ('mlp-digits', 'torch-bmm'),
                 ('cnn-digits', 'torch-func-vmap'), ('cnn-digits', 'torch-bmm'),
                 ('cnn-digits', 'torch-grouped')}
  else:
    assert 'torch is not installed' in quick_table
  assert methods == expected
  for row in rows[1:]:
    assert float(row[3]) > 0, row  # model-steps/s: a number, not an error.
    assert float(row[4]) >= 0, row  # GFLOP/s from Network.flops_per_example() (toy: ~0).


def test_quick_recording_share_is_a_fraction(quick_table):
  rows = _rows(quick_table.split('## Recording cost')[1])
  assert rows[0][0] == 'workload' and len(rows) == 2
  share = float(rows[1][6].rstrip('%'))
  assert 0 <= share <= 100, rows[1]


def test_the_paper_schedule_row_follows_the_paper_config(data_dir):
  from benchmarks import train as bench
  from ensembles.configs import cifar10_paper
  from ensembles.training import data as data_lib

  paper = cifar10_paper.get_config()
  row = bench.RECORDING_VARIANTS[bench.PAPER_SCHEDULE]
  assert row['epochs'] == paper.hparams.epochs
  for key in ('dense_epochs', 'every_epoch_until', 'sparse_every'):
    assert row['record'][key] == paper.record[key], key
  # Every other train example of the recording workload, as the paper's 25,000 of 50,000.
  num_train = data_lib.load_dataset(bench.WORKLOADS['mlp-digits'].dataset, data_dir).info.num_train
  assert row['record']['train_probe_size'] == num_train // 2
  assert paper.record.train_probe_size == 50_000 // 2
