"""examples/pytorch/train.py end to end: a PyTorch loop writes a store the analysis maps."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from sklearn.datasets import load_digits  # noqa: E402

from ensembles import analysis, store  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(__file__), '..', '..', 'examples', 'pytorch', 'train.py')
EPOCHS = 2
# What the script must never load: the store it writes through needs NumPy and TensorStore.
FORBIDDEN = ('jax', 'jaxlib', 'flax', 'optax', 'orbax', 'tensorflow', 'tensorflow_datasets')
# The recording times of EPOCHS epochs, worked out by hand from the script's constants: 1,437
# train examples (80% of 1,797, stratified) in batches of 32 make 45 steps per epoch; the
# first epoch is recorded every 5 steps, then every epoch's end.
STEPS = [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 90]
MEMBERS = [dict(arch='mlp', width=w, optimizer='sgd', learning_rate=lr, seed=s)
           for w in (32, 128) for lr in (0.02, 0.1) for s in (0, 1)]


def _run_script(workdir: str, weights: str) -> dict:
  """Runs the script in a fresh interpreter; returns what it printed as JSON on its last line."""
  wrapper = textwrap.dedent(f"""
      import json, runpy, sys
      sys.argv = ['train.py', '--workdir={workdir}', '--epochs={EPOCHS}', '--save_dir={weights}']
      runpy.run_path({SCRIPT!r}, run_name='__main__')
      print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))
      """)
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'XLA_'))}
  result = subprocess.run([sys.executable, '-c', wrapper], capture_output=True, text=True,
                          env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def _probs_float64(state: dict, x_NxD: np.ndarray) -> np.ndarray:
  """Softmax of the saved MLP (Linear, ReLU, Linear) on x, in float64 NumPy."""
  w = {k: v.numpy().astype(np.float64) for k, v in state.items()}
  logits_NxC = np.maximum(x_NxD @ w['0.weight'].T + w['0.bias'], 0) @ w['2.weight'].T \
      + w['2.bias']
  probs_NxC = np.exp(logits_NxC - logits_NxC.max(-1, keepdims=True))
  return probs_NxC / probs_NxC.sum(-1, keepdims=True)


def test_the_pytorch_recipe_writes_a_store_the_analysis_maps(tmp_path):
  workdir, weights = str(tmp_path / 'store'), str(tmp_path / 'weights')
  assert _run_script(workdir, weights) == [], 'the training process imported these'

  traj = store.load_trajectories(workdir)
  assert traj.members == MEMBERS and traj.splits == ('train', 'test')
  assert traj.time_unit == 'epoch' and traj.recorded.all() and traj.missing == []
  np.testing.assert_array_equal(traj.steps, np.tile(STEPS, (len(MEMBERS), 1)))
  np.testing.assert_allclose(traj.epochs, np.array(STEPS) / 45)

  # Probes: indices into load_digits(), their labels, disjoint train and test.
  digits = load_digits()
  indices = {s: traj.probe_indices(s) for s in traj.splits}
  assert [len(indices[s]) for s in traj.splits] == [200, 100]
  assert not set(indices['train']) & set(indices['test'])
  for split in traj.splits:
    np.testing.assert_array_equal(traj.labels(split), digits.target[indices[split]])

  # The last checkpoint of every member equals its saved weights' predictions, recomputed here
  # in float64 from the raw pixels: equal within float32 rounding of the forward pass (largest
  # relative difference measured 9e-6, on 20 epochs, 2026-12-07).
  for m in range(len(MEMBERS)):
    state = torch.load(os.path.join(weights, f'member_{m}.pt'))
    for split in traj.splits:
      expected_NxC = _probs_float64(state, digits.data[indices[split]] / 16)
      np.testing.assert_allclose(traj.probs(split)[m, -1], expected_NxC, rtol=5e-5, atol=1e-7,
                                 err_msg=f'member {m}, split {split}')
  # Training moved every member away from its start and fits the train probes.
  assert (traj.metrics['train_accuracy'][:, -1] > 0.8).all(), traj.metrics['train_accuracy']
  assert (traj.metrics['train_loss'][:, -1] < traj.metrics['train_loss'][:, 0]).all()

  the_map = analysis.embed_trajectories(traj, k=3)
  assert the_map.placed.all() and np.isfinite(the_map.coords).all()
  es = the_map.explained_stress
  assert ((0 < es) & (es <= 1 + 1e-6)).all() and (np.diff(es) >= -1e-6).all(), es
