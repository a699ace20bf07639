r"""Device scaling of the trainer: model-steps/s with the member axis over 1, 2, 4 host devices.

  python -m benchmarks.scale                      # mlp on digits, E = 256, devices 1,2,4 (~3 min)
  python -m benchmarks.scale --rounds 1 --device_counts 1,2

Run from the repository root, with the package installed (``pip install -e .``). Each
measurement is one child of ``benchmarks.train`` (its 'ensembles' method: the real trainer,
placed and compiled as ``experiment.train_and_record`` does, compile, calibration, median of
timed chunks), with ``XLA_FLAGS=--xla_force_host_platform_device_count=n``. Rounds go through
the device counts in turn (1, 2, 4, 1, 2, 4, ...), so that a shared machine's load drifts over
all of them alike; each count's median over the rounds is reported.

'cores used' is the child's CPU time over its wall time (compile and calibration included):
with n devices on free cores it approaches min(n, cores); when other jobs hold the cores it
stays lower, and then no device count can scale.

Goal (issue 6): with the members over the machine's 2 real cores, >= 1.8x the model-steps/s of
one device. Results go to ``benchmarks/results/scale_<host-kind>.md``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
import types

from benchmarks import common
from benchmarks import train

# The goal: the 2-device rate over the 1-device rate.
GOAL_SPEEDUP = 1.8
GOAL_DEVICES = 2
DEVICE_COUNTS = (1, 2, 4)
ROUNDS = 2


def _children_cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def measure(workload: train.Workload, members: int, devices: int, args) -> dict:
  """One trainer child on ``devices`` forced host devices, with the cores it got."""
  cpu, started = _children_cpu_seconds(), time.perf_counter()
  result = train.measure('ensembles', workload, members, args, devices=devices)
  wall = time.perf_counter() - started
  return dict(result, cores_used=(_children_cpu_seconds() - cpu) / wall)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workload', default='mlp-digits', choices=sorted(train.WORKLOADS))
  parser.add_argument('--members', type=int, default=256)
  parser.add_argument('--device_counts', default=','.join(map(str, DEVICE_COUNTS)))
  parser.add_argument('--rounds', type=int, default=ROUNDS)
  parser.add_argument('--repeats', type=int, default=train.REPEATS,
                      help='timed chunks per child (median)')
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--out', default=None,
                      help="markdown output (default benchmarks/results/scale_<host>.md; '-' "
                           'for none)')
  args = parser.parse_args(argv)
  from ensembles.training import data as data_lib

  counts = [int(x) for x in args.device_counts.split(',') if x]
  workload = train.WORKLOADS[args.workload]
  child_args = types.SimpleNamespace(
      data_dir=os.path.abspath(args.data_dir or data_lib.default_data_dir()), quick=False,
      chunk_seconds=train.CHUNK_SECONDS, repeats=args.repeats,
      max_seconds_per_step=train.MAX_SECONDS_PER_STEP, child_timeout=train.CHILD_TIMEOUT_S)
  data_lib.prepare_dataset(workload.dataset, child_args.data_dir)
  environment = common.environment_lines()
  runs = {k: [] for k in counts}
  for _ in range(args.rounds):
    for k in counts:
      runs[k].append(measure(workload, args.members, k, child_args))
  load_after = ', '.join(f'{x:.1f}' for x in os.getloadavg())

  def median(k, key):
    values = [r[key] for r in runs[k] if key in r]
    return statistics.median(values) if values else None

  base = median(1, 'steps_per_s') if 1 in runs else None
  headers = ['devices', 'model-steps/s (each round)', 'median', 'vs 1 device', 'cores used',
             'matmul peak GFLOP/s', 'compile s']
  rows = []
  for k in counts:
    rate = median(k, 'steps_per_s')
    rows.append([
        k, ' / '.join(f"{r['steps_per_s']:.0f}" if 'steps_per_s' in r else r.get('error', '?')[:40]
                      for r in runs[k]),
        f'{rate:.0f}' if rate else '-', f'{rate / base:.2f}x' if rate and base else '-',
        ' / '.join(f"{r['cores_used']:.2f}" for r in runs[k]),
        f"{median(k, 'matmul_peak_gflops'):.0f}" if median(k, 'matmul_peak_gflops') else '-',
        f"{median(k, 'compile_s'):.1f}" if median(k, 'compile_s') else '-'])
  speedup = (median(GOAL_DEVICES, 'steps_per_s') / base
             if base and GOAL_DEVICES in runs and median(GOAL_DEVICES, 'steps_per_s') else None)
  goal = ('not measured' if speedup is None else
          f'{speedup:.2f}x: {"met" if speedup >= GOAL_SPEEDUP else "NOT met"}')
  text = '\n\n'.join([
      '# Trainer device scaling',
      '\n'.join(environment) + f'\n- load average (1, 5, 15 min) at the end: {load_after}',
      f'{args.workload} ({workload.arch} width {workload.width} depth {workload.depth}, batch '
      f'{workload.batch_size}), E = {args.members} members, sharded over n forced host devices; '
      f'{args.rounds} rounds over the device counts, each child the median of {args.repeats} '
      f'timed chunks of about {train.CHUNK_SECONDS:g} s.',
      common.markdown_table(headers, rows),
      f'Goal: {GOAL_DEVICES} devices >= {GOAL_SPEEDUP}x one device: {goal}.'])
  print(text)
  path = args.out or os.path.join(common.RESULTS_DIR, f'scale_{common.host_kind()}.md')
  common.write_results(text, path)


if __name__ == '__main__':
  main()
