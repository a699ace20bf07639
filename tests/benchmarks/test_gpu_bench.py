"""Smoke test of benchmarks/gpu.sh --dry-run: the GPU benchmark's code path at toy sizes on CPU.

A benchmark, not a timed test: nothing here asserts a wall time or a throughput.
"""

import os
import subprocess
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SCRIPT = os.path.join(_ROOT, 'benchmarks', 'gpu.sh')
# Generous: the dry run takes ~45 s on 2 loaded cores (three children, each compiling).
_TIMEOUT_S = 300


def _rows(table: str) -> list[list[str]]:
  return [[cell.strip() for cell in line.strip('|').split('|')]
          for line in table.splitlines() if line.startswith('| ') and '---' not in line]


def test_dry_run_prints_a_row_per_config(tmp_path):
  out = tmp_path / 'gpu.md'
  done = subprocess.run(
    ['bash', _SCRIPT, '--dry-run', '--out', str(out)], capture_output=True, text=True,
    timeout=_TIMEOUT_S, cwd=tmp_path, env={**os.environ, 'PYTHON': sys.executable})
  assert done.returncode == 0, done.stderr[-3000:]
  text = out.read_text()
  assert text in done.stdout  # The same table is printed and written.
  assert 'no download' in text and '- versions: python' in text
  header, *rows = _rows(text)
  assert header[:4] == ['workload', 'E', 'conv', 'dtype'] and 'MFU' in header
  assert {(r[0], r[2], r[3]) for r in rows} == {
    ('cnn-cifar10', 'auto', 'float32'), ('resnet-cifar10', 'auto', 'float32'),
    ('cnn-cifar10', 'auto', 'bfloat16'), ('cnn-cifar10', 'lax', 'float32')}
  for row in rows:
    assert row[-1] == 'ok', row
    assert float(row[4]) > 0 and float(row[6].rstrip('%')) > 0, row  # steps/s, MFU: numbers.


def test_without_a_gpu_the_script_says_how_to_get_one(tmp_path):
  done = subprocess.run(['bash', _SCRIPT], capture_output=True, text=True, timeout=_TIMEOUT_S,
                        cwd=tmp_path, env={**os.environ, 'PYTHON': sys.executable,
                                           'JAX_PLATFORMS': 'cpu'})
  assert done.returncode == 1
  assert "pip install -e '.[cuda12]'" in done.stderr and '--dry-run' in done.stderr


def test_a_wheel_folder_without_wheels_is_refused(tmp_path):
  done = subprocess.run(['bash', _SCRIPT, '--dry-run'], capture_output=True, text=True,
                        timeout=_TIMEOUT_S, cwd=tmp_path,
                        env={**os.environ, 'PYTHON': sys.executable, 'WHEELS': str(tmp_path)})
  assert done.returncode == 1
  assert f'WHEELS={tmp_path} holds no .whl files' in done.stderr
  assert 'offline_wheels.sh' in done.stderr and not done.stdout


def test_a_failing_row_is_reported_and_the_table_still_printed(tmp_path):
  # Every row killed after 1 s (as a hung or out-of-memory config would end): rows with errors.
  done = subprocess.run(
    [sys.executable, '-m', 'benchmarks.gpu', '--dry-run', '--config_timeout_s', '1', '--out',
     '-'],
    capture_output=True, text=True, timeout=_TIMEOUT_S, cwd=_ROOT)
  assert done.returncode == 0, done.stderr[-3000:]
  _, *rows = _rows(done.stdout)
  assert len(rows) == 4
  assert all(row[-1] == 'timed out after 1 s' and row[4] == '-' for row in rows), rows
