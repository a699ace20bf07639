"""The Colab notebooks: committed without outputs, and executed top to bottom on tiny sweeps.

The notebooks run in fresh kernels of the current interpreter, one after the other in one
temporary working directory (their workdirs/ go there), with ENSEMBLES_TINY=1 and the session's
prepared data_dir: quickstart trains the tiny sweep, compare_runs loads it as its reference.
Measured on a 2-core CPU at load 4-5: 84 s for both (+19 s preparing data_dir, shared with the
other tests), 40 s when idle, so the test stays in the default suite.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import types

import nbformat
import pytest
from ipykernel import kernelspec
from nbclient import NotebookClient

import ensembles

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ('quickstart.ipynb', 'compare_runs.ipynb')

# A kernel spec of this name is installed for the tests, pointing at sys.executable, so the
# notebooks run on this interpreter whatever other "python3" kernels the machine knows.
KERNEL_NAME = 'ensembles-tests'

# Seconds one cell may run (the training cells of the tiny sweeps take about a minute).
CELL_TIMEOUT_S = 600

# What each executed notebook displays: (PNG images, plotly figures, factor tables).
EXPECTED_DISPLAYS = {
    'quickstart.ipynb': (3, 1, 1),  # 2-D map, explained stress, progress; 3-D map; factors
    'compare_runs.ipynb': (2, 1, 1),  # 2-D map, distances at equal progress; 3-D map; factors
}


def _read(name: str) -> nbformat.NotebookNode:
  return nbformat.read(os.path.join(ROOT, 'notebooks', name), as_version=nbformat.NO_CONVERT)


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_committed_notebook_is_valid_and_has_no_outputs(name):
  nb = _read(name)
  nbformat.validate(nb)
  for index, cell in enumerate(nb.cells):
    if cell.cell_type == 'code':
      assert cell.outputs == [] and cell.execution_count is None, (
          f'notebooks/{name} cell {index} ({cell.get("id")}) has outputs or an execution count: '
          'clear all outputs before committing (see notebooks/README.md).')


def _cell(name: str, cell_id: str) -> str:
  [cell] = [c for c in _read(name).cells if c.get('id') == cell_id]
  return cell.source


def _setup_cell(name: str) -> str:
  return _cell(name, 'setup')


@pytest.mark.parametrize('name', NOTEBOOKS)
@pytest.mark.parametrize('gpu, requirement', [
    (False, 'ensembles @ git+https://github.com/someone/ensembles'),
    (True, 'ensembles[cuda12] @ git+https://github.com/someone/ensembles'),
])
def test_setup_cell_installs_from_repo_url_in_colab_only(name, gpu, requirement, monkeypatch):
  calls = []
  monkeypatch.setattr(subprocess, 'run', lambda args, **kwargs: calls.append(args))
  monkeypatch.setattr(shutil, 'which', lambda cmd: '/usr/bin/nvidia-smi' if gpu else None)
  source = _setup_cell(name)
  exec(source, {})  # pylint: disable=exec-used
  assert not calls  # Not in Colab: nothing installed.

  monkeypatch.setitem(sys.modules, 'google.colab', types.ModuleType('google.colab'))
  with pytest.raises(ValueError, match='REPO_URL'):  # The placeholder is still there.
    exec(source, {})  # pylint: disable=exec-used
  placeholder = "REPO_URL = 'https://github.com/<owner>/ensembles'"
  assert placeholder in source
  source = source.replace(placeholder, placeholder.replace('<owner>', 'someone'))
  exec(source, {})  # pylint: disable=exec-used
  assert calls == [[sys.executable, '-m', 'pip', 'install', '-q', requirement]]


def _readme_workdir() -> str:
  """The --workdir of the README's quickstart command, relative to the clone's root."""
  with open(os.path.join(ROOT, 'README.md')) as f:
    quickstart = f.read().split('## Quickstart', 1)[1]
  return re.search(r'ensembles-run --config=ensembles/configs/quickstart.py --workdir=(\S+)',
                   quickstart)[1]


@pytest.mark.parametrize('name, variable', [('quickstart.ipynb', 'WORKDIR'),
                                            ('compare_runs.ipynb', 'REFERENCE_WORKDIR')])
@pytest.mark.parametrize('cwd', ['notebooks', '.'])
def test_the_notebooks_open_the_store_the_readme_command_writes(name, variable, cwd,
                                                                monkeypatch):
  """Jupyter started in notebooks/ (or the clone) finds workdirs/quickstart of the clone."""
  assert _readme_workdir() == 'workdirs/quickstart'
  monkeypatch.delenv('ENSEMBLES_TINY', raising=False)
  monkeypatch.chdir(os.path.join(ROOT, cwd))
  namespace = {}
  exec(_cell(name, 'parameters'), namespace)  # pylint: disable=exec-used
  assert namespace[variable] == os.path.join(ROOT, 'workdirs', 'quickstart')


def test_outside_a_clone_the_stores_go_under_the_working_directory(tmp_path, monkeypatch):
  monkeypatch.setenv('ENSEMBLES_TINY', '1')
  monkeypatch.chdir(tmp_path)
  namespace = {}
  exec(_cell('quickstart.ipynb', 'parameters'), namespace)  # pylint: disable=exec-used
  assert namespace['WORKDIR'] == str(tmp_path / 'workdirs' / 'quickstart_tiny')


_BADGE = re.compile(r'https://colab\.research\.google\.com/github/([^/\s]+/[^/\s]+)/blob/main/'
                    r'notebooks/([\w.]+)\)')


def _repositories(root: pathlib.Path) -> tuple[set[str], set[str]]:
  """(the owner/name of every notebook's REPO_URL, of every Colab badge) under a clone's root;
  each badge opens a notebook of NOTEBOOKS, and each notebook has one badge: its own."""
  texts = [(root / 'README.md').read_text(), (root / 'notebooks' / 'README.md').read_text()]
  urls = set()
  for name in NOTEBOOKS:
    nb = nbformat.read(root / 'notebooks' / name, as_version=nbformat.NO_CONVERT)
    [setup] = [c.source for c in nb.cells if c.get('id') == 'setup']
    urls.add(re.search(r"^REPO_URL = 'https://github.com/([^']+)'", setup, re.M)[1])
    markdown = '\n'.join(c.source for c in nb.cells if c.cell_type == 'markdown')
    assert [notebook for _, notebook in _BADGE.findall(markdown)] == [name]
    texts.append(markdown)
  badges = set()
  for text in texts:
    for repo, notebook in _BADGE.findall(text):
      assert notebook in NOTEBOOKS, notebook
      badges.add(repo)
  return urls, badges


def test_the_badges_open_the_repository_of_repo_url_and_one_command_sets_it(tmp_path):
  assert _repositories(pathlib.Path(ROOT)) == ({'<owner>/ensembles'}, {'<owner>/ensembles'})
  # The command notebooks/README.md gives, run on a copy of the files it edits.
  (tmp_path / 'notebooks').mkdir()
  for path in ['README.md', 'notebooks/README.md', *(f'notebooks/{n}' for n in NOTEBOOKS)]:
    shutil.copy(os.path.join(ROOT, path), tmp_path / path)
  readme = (tmp_path / 'notebooks' / 'README.md').read_text()
  [command] = re.findall(r"```bash\n(python - <<'EOF'\nREPO = .*?\nEOF)\n```", readme, re.S)
  subprocess.run(['bash', '-c', command.replace("'your-name/", "'someone/")], cwd=tmp_path,
                 check=True, env=dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
                                      + os.environ.get('PATH', '')))
  assert _repositories(tmp_path) == ({'someone/ensembles'}, {'someone/ensembles'})


@pytest.fixture(scope='module')
def jupyter_path(tmp_path_factory) -> str:
  """A Jupyter data dir holding only the KERNEL_NAME spec (this interpreter's ipykernel)."""
  prefix = tmp_path_factory.mktemp('jupyter')
  kernelspec.install(kernel_name=KERNEL_NAME, user=False, prefix=str(prefix))
  return str(prefix / 'share' / 'jupyter')


def _displays(nb: nbformat.NotebookNode) -> tuple[int, int, int]:
  """(PNG images, plotly figures, factor tables) among the outputs of an executed notebook."""
  data = [out.get('data', {}) for cell in nb.cells if cell.cell_type == 'code'
          for out in cell.outputs]
  return (sum('image/png' in d for d in data),
          sum('application/vnd.plotly.v1+json' in d for d in data),
          sum('| factor |' in d.get('text/markdown', '') for d in data))


def _trained(nb: nbformat.NotebookNode, cell_id: str) -> bool:
  """Whether a cell printed a TrainSummary (trained) rather than only loading a store."""
  [cell] = [c for c in nb.cells if c.get('id') == cell_id]
  return any('steps/s' in out.get('text', '') for out in cell.outputs)


# Run before a notebook: a front end whose root logger passes INFO on (plain Jupyter's root
# logger stops it at WARNING; others show the libraries' INFO logs): the notebook turns them off.
VERBOSE_FRONT_END = 'import logging\nlogging.getLogger().setLevel(logging.INFO)'


def _logged(nb: nbformat.NotebookNode) -> list[str]:
  """The lines of the notebook's stream outputs that a library logged at INFO."""
  return [line for cell in nb.cells if cell.cell_type == 'code' for out in cell.outputs
          if out.output_type == 'stream' for line in out.text.splitlines()
          if line.startswith('INFO') or re.match(r'I\d{4} ', line)]


def _execute(name: str, workdir: str) -> nbformat.NotebookNode:
  nb = _read(name)
  nb.cells.insert(0, nbformat.v4.new_code_cell(VERBOSE_FRONT_END))
  client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S,
                          resources={'metadata': {'path': workdir}})
  client.execute()  # Raises CellExecutionError, with the cell and traceback, on any error.
  return nb


def test_notebooks_run_top_to_bottom_on_tiny_sweeps(data_dir, jupyter_path, tmp_path,
                                                    monkeypatch):
  """quickstart trains the tiny sweep; compare_runs, in the same directory, loads it."""
  monkeypatch.setenv('JUPYTER_PATH', jupyter_path)
  monkeypatch.setenv('ENSEMBLES_TINY', '1')
  monkeypatch.setenv('ENSEMBLES_DATA_DIR', data_dir)
  # The kernel imports ensembles, analysis and configs from this checkout, installed or not.
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
      [ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
  monkeypatch.delenv('MPLBACKEND', raising=False)  # ipykernel's inline backend shows figures.

  quickstart = _execute('quickstart.ipynb', str(tmp_path))
  assert _trained(quickstart, 'train')
  assert _displays(quickstart) == EXPECTED_DISPLAYS['quickstart.ipynb']
  [view] = [out.data['application/vnd.plotly.v1+json'] for out in quickstart.cells[
      [c.get('id') for c in quickstart.cells].index('map3d')].outputs]
  hover = view['data'][0]['hovertext'][-1]  # Member 0 at the last recording time (epoch 2).
  assert re.fullmatch(r'member 0<br>arch=mlp, augment=False<br>epoch 2, step \d+<br>'
                      r'train_accuracy=0\.\d{3}, test_accuracy=0\.\d{3}', hover), hover
  assert not _logged(quickstart), _logged(quickstart)[:5]
  compare_runs = _execute('compare_runs.ipynb', str(tmp_path))
  assert not _trained(compare_runs, 'reference')  # The quickstart's store, loaded.
  assert _trained(compare_runs, 'new')
  assert _displays(compare_runs) == EXPECTED_DISPLAYS['compare_runs.ipynb']
  assert not _logged(compare_runs), _logged(compare_runs)[:5]

  # The tiny sweeps (ensembles/configs/quickstart.py:tiny; new seeds for the MLPs only) were recorded.
  reference = ensembles.load_trajectories(str(tmp_path / 'workdirs' / 'quickstart_tiny'))
  new = ensembles.load_trajectories(str(tmp_path / 'workdirs' / 'quickstart_tiny_new_seeds'))

  def swept(traj):
    return [(m['arch'], m['augment'], m['seed']) for m in traj.members]

  assert swept(reference) == [('mlp', False, 0), ('mlp', True, 0), ('cnn', False, 0),
                              ('cnn', True, 0)]
  assert swept(new) == [('mlp', False, 10), ('mlp', True, 10)]
  assert reference.epochs[-1] == new.epochs[-1] == 2
