"""Helpers shared by the benchmarks: timing, memory, the matmul peak, the environment, tables.

Measurements on a shared machine are noisy: time a call several times and take the median,
measure ratios within one run (the matmul peak next to the throughput it normalises), and run
each method in a fresh process (``run_child``) so that one method's caches and memory do not
leak into the next.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

# Side of the square float32 matmul that measures the peak (large enough to be compute-bound).
PEAK_MATMUL_SIZE = 2048
# Timed repeats of the peak matmul (the median is reported).
PEAK_MATMUL_REPEATS = 5
# Packages whose versions a results table lists (absent ones are skipped).
VERSIONED_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'torch')
# The repository root: the benchmarks run from it as modules (``python -m benchmarks.train``),
# and so do their children (``run_child``), so that ``benchmarks`` imports without a path hack.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where the benchmarks write their markdown results (``<benchmark>_<host>.md``).
RESULTS_DIR = os.path.join(REPO_ROOT, 'benchmarks', 'results')

# Line prefix of a child's JSON result on its stdout (other output may precede it).
RESULT_PREFIX = 'BENCHMARK_RESULT '


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
  """Runs ``fn`` (which must block until its work is done) ``repeats`` times.

  Returns:
    (median seconds, all timings).
  """
  timings = []
  for _ in range(repeats):
    started = time.perf_counter()
    fn()
    timings.append(time.perf_counter() - started)
  return statistics.median(timings), timings


def rss_bytes(field: str = 'VmRSS') -> int:
  """A memory field of /proc/self/status in bytes (VmRSS now, VmHWM peak); 0 off Linux."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return 0


def reset_peak_rss() -> None:
  """Resets VmHWM to the current resident set (Linux >= 4.0), so it measures what follows."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
  except OSError:
    pass


def calibrated_timing(run_steps, spec: dict) -> dict:
  """Warm-up, calibration, timed chunks: model-steps/s and the peak RSS of this process.

  The calibration doubles its step count until one call takes a quarter of a chunk, which
  also warms up caches and lazy initialisation (PyTorch's first steps are slow).
  """
  reset_peak_rss()
  started = time.perf_counter()
  run_steps(1)
  first_step = time.perf_counter() - started
  result = dict(first_step_s=first_step)
  if first_step > spec['max_seconds_per_step']:
    result.update(steps_per_s=spec['members'] / first_step, timed_steps=1, note='1 step only')
  else:
    steps, seconds = 1, 0.0
    while seconds < spec['chunk_seconds'] / 4:
      steps *= 2
      started = time.perf_counter()
      run_steps(steps)
      seconds = time.perf_counter() - started
    steps = max(1, round(steps * spec['chunk_seconds'] / seconds))
    seconds, timings = median_seconds(lambda: run_steps(steps), spec['repeats'])
    result.update(steps_per_s=spec['members'] * steps / seconds, timed_steps=steps,
                  chunk_timings=timings)
  result['peak_rss_bytes'] = rss_bytes('VmHWM')
  return result


def without_compilation_cache() -> None:
  """No persistent compilation cache in this child, whatever the environment chose.

  Compile times are measured here; ``JAX_COMPILATION_CACHE_DIR`` would make them cache loads.
  """
  import jax

  jax.config.update('jax_compilation_cache_dir', None)


def trainer_cohort(config, dataset, eval_batch_size: int, probe_size: int,
                   formulation: str | None = None):
  """The real trainer's compiled cohort for a one-cohort sweep, set up as ``experiment`` does.

  Members are placed on the member mesh with ``placement.place_cohort`` and the program is
  compiled with ``placement.compile_cohort`` (fitted to the devices' memory unless
  ``config.train.member_block`` is set, as ``Plan.compile_cohort`` does).

  Args:
    config: a sweep config whose members form one cohort.
    dataset: its (host) dataset.
    eval_batch_size: probe examples evaluated at once.
    probe_size: the first ``probe_size`` test examples serve as both probe sets.
    formulation: a convolution formulation to force
      (``ensembles.training.models.CONV_FORMULATIONS``); None keeps the backend's default.

  Returns:
    (program with the member block used, compiled cohort, placed inputs: ``placement.Placed``
    with hp, dataset and probes).
  """
  import dataclasses

  import numpy as np

  from ensembles.training import devices
  from ensembles.training import placement
  from ensembles.training import sweep as sweep_lib
  from ensembles.training.program import CohortProgram

  (cohort,) = sweep_lib.make_cohorts(sweep_lib.expand_members(config))
  program = CohortProgram.for_cohort(
    cohort, dataset.info, eval_batch_size, config.train.member_block,
    compute_dtype=config.train.compute_dtype)
  if formulation:
    program = dataclasses.replace(
      program, network=program.network.with_conv_formulation(formulation))
  mesh = devices.member_mesh()
  probes = np.arange(probe_size)
  placed = placement.place_cohort(mesh, cohort.hparams, dataset, probes, probes)
  program, compiled = placement.compile_cohort(
    program, placed, mesh, fit_memory=not config.train.member_block, where=cohort.describe())
  return program, compiled, placed


def trainer_timing(compiled, hp, dataset, spec: dict) -> tuple[Callable[[], object], dict]:
  """Times ``compiled.train`` with ``calibrated_timing(spec)``.

  Returns:
    (a function returning the current state, the timing result).
  """
  import jax

  holder = [compiled.init(hp)]

  def run_steps(n):
    holder[0] = compiled.train(holder[0], hp, dataset, n)
    jax.block_until_ready(holder[0])

  return lambda: holder[0], calibrated_timing(run_steps, spec)


def jax_matmul_peak_gflops(
  size: int = PEAK_MATMUL_SIZE, repeats: int = PEAK_MATMUL_REPEATS, dtype: str = 'float32'
) -> float:
  """GFLOP/s of one jitted (size x size) @ (size x size) ``dtype`` matmul: the machine's peak."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size), np.float32), dtype)
  matmul = jax.jit(jnp.matmul)
  matmul(a, a).block_until_ready()
  seconds, _ = median_seconds(lambda: matmul(a, a).block_until_ready(), repeats)
  return 2 * size**3 / seconds / 1e9


def versions() -> dict[str, str]:
  found = {'python': platform.python_version()}
  for name in VERSIONED_PACKAGES:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return found


def host_kind() -> str:
  """A short file-name-safe machine kind: 'cpu-2cores', or the accelerator's device kind."""
  import jax

  backend = jax.default_backend()
  if backend == 'cpu':
    return f'cpu-{os.cpu_count()}cores'
  kind = jax.devices()[0].device_kind
  return f"{backend}-{''.join(c if c.isalnum() else '-' for c in kind).strip('-').lower()}"


def environment_lines() -> list[str]:
  """Markdown bullet lines: date, machine, load, versions."""
  from ensembles.training import devices

  try:
    load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  except OSError:
    load = 'unknown'
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
  return [
    f'- date: {stamp}',
    f'- machine: {host_kind()}, {devices.cpu_name()}, {os.cpu_count()} logical cores',
    f'- load average (1, 5, 15 min) at the start: {load}',
    '- versions: ' + ', '.join(f'{k} {v}' for k, v in versions().items()),
  ]


def int_list(text: str) -> tuple[int, ...]:
  """'2000,8000' -> (2000, 8000): an argparse ``type`` for comma-separated integers."""
  return tuple(int(x) for x in text.split(',') if x)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  lines = ['| ' + ' | '.join(headers) + ' |', '|' + '|'.join('---' for _ in headers) + '|']
  lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in rows]
  return '\n'.join(lines)


def write_results(text: str, path: str | None) -> None:
  """Writes a results table to ``path`` (nothing for None or '-'), creating its folder."""
  if not path or path == '-':
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text if text.endswith('\n') else text + '\n')
  print(f'written to {path}', file=sys.stderr)


def emit_result(result: dict) -> None:
  """Prints a child's result as the line ``run_child`` looks for."""
  print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_child(
  argv: Sequence[str], timeout_s: float, env: dict[str, str] | None = None
) -> dict:
  """Runs ``python argv...`` in ``REPO_ROOT`` and returns the dict it emitted, or {'error': why}.

  ``argv`` names a module (``['-m', 'benchmarks.train', '--child', spec]``); paths in it should
  be absolute (the child runs in ``REPO_ROOT``).
  """
  try:
    done = subprocess.run(
      [sys.executable, *argv],
      capture_output=True,
      text=True,
      timeout=timeout_s,
      cwd=REPO_ROOT,
      env={**os.environ, **(env or {})},
    )
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout_s:.0f} s'}
  for line in reversed(done.stdout.splitlines()):
    if line.startswith(RESULT_PREFIX):
      return json.loads(line[len(RESULT_PREFIX):])
  tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
  return {'error': f'exit {done.returncode}: ' + ' / '.join(tail)}
