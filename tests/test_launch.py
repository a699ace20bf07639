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


_QUICKSTART_TINY = 'ensembles/configs/quickstart.py:tiny'
_MNIST1D_TINY = 'ensembles/configs/mnist1d.py:tiny'


@pytest.mark.parametrize('config, flag, message', [
    # An hparam that the sweep or every variant sets: no member would use the override.
    (_QUICKSTART_TINY, '--config.hparams.learning_rate=-0.1',
     'error: --config.hparams.learning_rate=-0.1 would be ignored: every member takes '
     'learning_rate from config.variants (variants[0]: 0.05), not from config.hparams. Set it '
     'there instead: --config.variants[0].learning_rate=-0.1.\n'),
    (_MNIST1D_TINY, '--config.hparams.learning_rate=0.1',
     'error: --config.hparams.learning_rate=0.1 would be ignored: every member takes '
     'learning_rate from config.sweep.learning_rate=(0.03,), not from config.hparams. Set it '
     "there instead: --config.sweep.learning_rate='(0.1,)' (a tuple of the values to sweep).\n"),
    # The flags those errors name reach the members (whose validation then refuses -0.1, lamb).
    (_QUICKSTART_TINY, '--config.variants[0].learning_rate=-0.1',
     'hparams.learning_rate=-0.1: must be >= 0'),
    (_MNIST1D_TINY, "--config.sweep.optimizer=('lamb',)",
     "hparams.optimizer: unknown value 'lamb'"),
    # A misspelt key: the nearest one.
    (_QUICKSTART_TINY, '--config.hparams.lerning_rate=0.1',
     'error: --config.hparams.lerning_rate=0.1: unknown config key hparams.lerning_rate; did you '
     'mean hparams.learning_rate?\n'),
])
def test_launch_train_names_the_flag_that_would_work(data_dir, tmp_path, config, flag, message):
  workdir = str(tmp_path / 'run')
  result = _run(['ensembles.launch.train', f'--config={config}', f'--workdir={workdir}', flag],
                data_dir, timeout=120)
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert result.stderr.startswith('error: ') and message in result.stderr, result.stderr
  assert not os.path.exists(workdir)


def test_a_field_missing_from_the_sweep_is_added_as_the_error_says(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  args = ['ensembles.launch.train', f'--config={_QUICKSTART_TINY}', f'--workdir={workdir}']
  result = _run([*args, '--config.sweep.width=0'], data_dir, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  first = result.stderr.splitlines()[0]
  assert first.startswith('error: --config.sweep.width=0: unknown config key sweep.width; '
                          'config.sweep has: arch, augment, seed. To add a field'), first
  suggested = first.split(' --config.sweep=', 1)[1]
  assert suggested == (""""{'arch': ('mlp', 'cnn'), 'augment': (False, True), 'seed': (0,), """
                       """'width': (0,)}\"""")
  # The suggested flag (shell quotes removed) reaches the members: width 0 is then refused.
  result = _run([*args, f'--config.sweep={suggested[1:-1]}'], data_dir, timeout=120)
  assert result.returncode == 2 and 'hparams.width=0: must be > 0' in result.stderr, result.stderr
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
  spelled = _run(['ensembles.launch.analyze', f'--workdir={tmp_path}/none', '--verbose=true'],
                 data_dir, timeout=120)
  assert spelled.returncode == 1 and 'Traceback' in spelled.stderr
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


_CTRL_C_OUTSIDE_TRAINING = '''
import os, signal, time
from ensembles.launch import runtime

def main(argv):  # A command busy outside training (loading a dataset, the analysis).
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(30)

runtime.run(main)
'''


def test_ctrl_c_outside_training_is_one_line_and_exit_130():
  result = subprocess.run([sys.executable, '-c', _CTRL_C_OUTSIDE_TRAINING], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == 130, result.stderr[-2000:]
  assert result.stdout == 'stopped on Ctrl-C (SIGINT): rerun the same command to resume.\n'
  assert result.stderr == '', result.stderr[-2000:]
