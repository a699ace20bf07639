"""Layers point one way: each package imports only the layers below it.

    launch, reproduction  ->  analysis  ->  store
            \\-> training -> configs.common, store

Checked on the source (every ``import`` and ``from ... import`` of every module, type-only
imports under ``if TYPE_CHECKING:`` excepted), and in fresh processes for what importing the
store and the analysis pulls in.
"""

import ast
import os
import subprocess
import sys

import pytest

import ensembles

PACKAGE_DIR = os.path.dirname(ensembles.__file__)

# What each layer may import from the project (a layer may always import itself).
ALLOWED = {
    'ensembles.store': set(),
    'ensembles.configs': {'ensembles.configs'},
    'ensembles.analysis': {'ensembles.store'},
    'ensembles.training': {'ensembles.store', 'ensembles.configs'},
    'ensembles.reproduction': {'ensembles.store', 'ensembles.configs', 'ensembles.analysis',
                               'ensembles.training'},
    'ensembles.launch': {'ensembles.store', 'ensembles.configs', 'ensembles.analysis',
                         'ensembles.training', 'ensembles.reproduction'},
}
# Sweep files may import only these.
CONFIG_FILE_IMPORTS = {'ml_collections', 'ensembles.configs.common', 'ensembles.configs',
                       '__future__', 'typing'}


def _layer(module: str) -> str | None:
  return next((layer for layer in ALLOWED if module == layer or module.startswith(layer + '.')),
              None)


def _is_type_checking(node: ast.If) -> bool:
  test = node.test
  return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or (
      isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')


def _imports(tree: ast.AST):
  """(line, imported module) of every import outside ``if TYPE_CHECKING:`` blocks."""
  def visit(node):
    if isinstance(node, ast.If) and _is_type_checking(node):
      for child in node.orelse:
        yield from visit(child)
      return
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      if node.module != 'ensembles':
        yield node.lineno, node.module
      for alias in node.names:  # `from ensembles import training` imports ensembles.training.
        yield node.lineno, f'{node.module}.{alias.name}'
    for child in ast.iter_child_nodes(node):
      yield from visit(child)
  yield from visit(tree)


def _modules():
  for root, _, files in os.walk(PACKAGE_DIR):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        rel = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-3].replace(os.sep, '.')
        yield rel.removesuffix('.__init__'), path


def upward_imports(source: str, module: str) -> list[str]:
  """The imports of ``source`` (the text of ``module``) that point up or sideways."""
  layer = _layer(module)
  if layer is None:  # ensembles/__init__.py: its names are imported lazily, on first use.
    return []
  allowed = ALLOWED[layer] | {layer}
  bad = []
  for line, imported in _imports(ast.parse(source)):
    target = _layer(imported)
    if target is not None and target not in allowed:
      bad.append(f'{module}:{line} imports {imported} ({layer} may import {sorted(allowed)})')
    if imported == 'ensembles' and layer != 'ensembles.launch':
      bad.append(f'{module}:{line} imports the top-level ensembles (import a layer instead)')
  return bad


def test_every_import_points_down():
  bad = []
  for module, path in _modules():
    with open(path) as f:
      bad += upward_imports(f.read(), module)
  assert not bad, '\n'.join(bad)


def test_an_upward_import_is_caught():
  # The check itself can fail: the store importing the trainer, the analysis importing configs,
  # a config file importing the trainer, each at module level or inside a function.
  assert upward_imports('from ensembles.training import program\n', 'ensembles.store.reader')
  assert upward_imports('def f():\n  from ensembles.configs import quickstart\n',
                        'ensembles.analysis.report')
  assert upward_imports('import ensembles.training.experiment\n', 'ensembles.configs.mnist1d')
  assert upward_imports('from ensembles import training\n', 'ensembles.analysis.summary')
  assert not upward_imports('if TYPE_CHECKING:\n  from ensembles.training import loop\n',
                            'ensembles.store.writer')


def test_config_files_import_only_ml_collections_and_config_helpers():
  bad = []
  for module, path in _modules():
    if module.startswith('ensembles.configs.'):
      with open(path) as f:
        bad += [f'{module}:{line} imports {m}' for line, m in _imports(ast.parse(f.read()))
                if m not in CONFIG_FILE_IMPORTS and not m.startswith(('ml_collections.', 'typing.'))]
  assert not bad, '\n'.join(bad)


def _fresh(code: str) -> str:
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


@pytest.mark.parametrize('module', ['ensembles', 'ensembles.store', 'ensembles.analysis',
                                    'ensembles.configs.quickstart'])
def test_importing_the_lower_layers_pulls_in_no_trainer(module):
  out = _fresh(f'import sys, {module}\n'
               "print(sorted(m for m in ('flax', 'optax', 'tensorflow_datasets', "
               "'ensembles.training') if m in sys.modules))")
  assert out.split() == ['[]'], f'import {module} pulled in {out}'


def test_importing_ensembles_changes_no_global_jax_state():
  out = _fresh('import jax, ensembles, ensembles.store, ensembles.analysis\n'
               'print(jax.config.jax_num_cpu_devices)')
  assert out.split() == ['-1']
