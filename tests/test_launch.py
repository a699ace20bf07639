"""The command-line entry points, end to end, in fresh processes (as a user runs them)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import ensembles

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, data_dir, timeout=600):
  env = dict(os.environ, ENSEMBLES_DATA_DIR=data_dir, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def test_launch_run_tiny_trains_records_and_analyses(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  result = _run(['ensembles.launch.run', '--config=ensembles/configs/quickstart.py:tiny', f'--workdir={workdir}',
                 '--config.hparams.epochs=1'], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'model-steps/s' in result.stdout  # Progress lines.
  assert 'ES_' in result.stdout or 'ES' in result.stdout
  traj = ensembles.load_trajectories(workdir)
  assert traj.members[0]['epochs'] == 1  # The override reached the members.
  assert traj.probs('train').shape[:2] == (len(traj.members), len(traj.epochs))
  embedding = np.load(os.path.join(workdir, 'analysis', 'embedding.npz'))
  assert embedding['coords'].shape[0] == len(traj.members) * len(traj.epochs)


@pytest.mark.parametrize('flag, message', [
    ('--config.hparams.schedule=cyclic', "unknown value 'cyclic'"),
    ('--config.hparams.learning_rte=0.1', 'learning_rte'),
    ('--config.hparams.batch_size=0', 'hparams.batch_size=0: must be > 0'),
])
def test_launch_train_bad_input_is_one_clear_error(data_dir, tmp_path, flag, message):
  workdir = str(tmp_path / 'run')
  result = _run(['ensembles.launch.train', '--config=ensembles/configs/quickstart.py:tiny', f'--workdir={workdir}',
                 flag], data_dir, timeout=120)
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert result.stderr.startswith('error: ') and message in result.stderr
  assert not os.path.exists(workdir)


def test_launch_run_rejects_unknown_color_before_training(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  result = _run(['ensembles.launch.run', '--config=ensembles/configs/quickstart.py:tiny', f'--workdir={workdir}',
                 '--color_by=colour'], data_dir, timeout=120)
  assert result.returncode != 0 and "--color_by='colour'" in result.stderr
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(workdir)


def test_malformed_config_file_is_one_clear_error(data_dir, tmp_path):
  config_path = tmp_path / 'broken.py'
  config_path.write_text('def get_config(:\n  pass\n')
  workdir = str(tmp_path / 'run')
  result = _run(['ensembles.launch.train', f'--config={config_path}', f'--workdir={workdir}'], data_dir,
                timeout=120)
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert 'broken.py' in result.stderr and 'SyntaxError' in result.stderr
  assert not os.path.exists(workdir)


def test_a_missing_config_file_and_a_missing_store_are_one_line_errors(data_dir, tmp_path):
  result = _run(['ensembles.launch.train', '--config=nope.py', f'--workdir={tmp_path}/run'],
                data_dir, timeout=120)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert "[Errno 2] No such file or directory: 'nope.py'" in result.stderr
  result = _run(['ensembles.launch.analyze', f'--workdir={tmp_path}/none'], data_dir, timeout=120)
  assert result.returncode == 2 and result.stderr.startswith('error: ')
  assert 'is not a trajectories store' in result.stderr and 'Traceback' not in result.stderr
  verbose = _run(['ensembles.launch.analyze', f'--workdir={tmp_path}/none', '--verbose'],
                 data_dir, timeout=120)
  assert verbose.returncode == 1 and 'Traceback' in verbose.stderr
  bad_flag = _run(['ensembles.launch.analyze', f'--workdir={tmp_path}/none', '--max_points=0'],
                  data_dir, timeout=120)
  assert bad_flag.returncode == 2 and 'Traceback' not in bad_flag.stderr
  assert bad_flag.stderr.startswith('error: flag --max_points=0: 0 is not integer >= 2')


@pytest.mark.parametrize('launcher, shown', [
    ('train', ['--config', '--workdir', '--overwrite', '--distributed']),
    ('run', ['--config', '--workdir', '--color_by', '--distributed']),
    ('analyze', ['--workdir', '--landmarks', '--overwrite', '--distributed']),
    ('reproduce', ['--workdir', '--config_arg', '--distributed']),
])
def test_help_lists_the_launchers_flags_and_exits_zero(launcher, shown):
  done = subprocess.run([sys.executable, '-m', f'ensembles.launch.{launcher}', '--help'],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  for flag in shown:
    assert f'  {flag}' in done.stdout or f'  --[no]{flag[2:]}' in done.stdout, flag
