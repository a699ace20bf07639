r"""Trains a few small PyTorch MLPs on digits and records their probe predictions.

  python examples/pytorch/train.py --workdir=/tmp/torch_digits [--epochs=20]
  python -m ensembles.launch.analyze --workdir=/tmp/torch_digits --color_by=width

Plain PyTorch in one process: a loop over members (two widths x two learning rates x two
seeds), each an MLP trained with SGD on scikit-learn's digits. At each checkpoint (every few
steps in the first epoch, where predictions move fastest, then at the end of every epoch) the
member's log-probabilities on fixed probe subsets of train and test go to
``ensembles.store.TrajectoryWriter``, which needs NumPy and TensorStore only: this process
never imports JAX. The lines that matter for your own loop are marked ``# <-``.
"""

import argparse
import itertools
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ensembles.store import TrajectoryWriter

# The sweep: one member per combination.
WIDTHS = (32, 128)                # hidden units of the one-hidden-layer MLP
LEARNING_RATES = (0.02, 0.1)      # SGD step sizes
SEEDS = (0, 1)                    # initialisation and data order
MOMENTUM = 0.9                    # SGD momentum, shared by every member
BATCH_SIZE = 32                   # examples per step
TEST_FRACTION = 0.2               # share of digits held out as test (stratified)
SPLIT_SEED = 0                    # seed of the train/test split and of the probe choice
NUM_PROBES = {'train': 200, 'test': 100}  # probe samples per split, fixed for every member
EARLY_EPOCHS = 1                  # epochs recorded densely at the start...
EARLY_EVERY = 5                   # ...every this many steps; then at the end of every epoch
NUM_CLASSES = 10
# Intra-op threads of PyTorch: on models this small more threads only add synchronisation
# (and spin-waits on a busy machine); one is fastest.
TORCH_THREADS = 1


def digits_splits() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """split -> (x_NxD float32 in [0, 1], y_N int64, indices_N into ``load_digits()``)."""
  digits = load_digits()
  index = np.arange(len(digits.target))
  train, test = train_test_split(index, test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                 stratify=digits.target)
  return {name: ((digits.data[i] / 16).astype(np.float32), digits.target[i].astype(np.int64), i)
          for name, i in (('train', train), ('test', test))}


def choose_probes(splits, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """split -> the positions of its probes in that split (sorted, drawn once for everyone)."""
  return {name: np.sort(rng.choice(len(splits[name][1]), size, replace=False))
          for name, size in NUM_PROBES.items()}


def make_mlp(width: int, seed: int) -> torch.nn.Module:
  torch.manual_seed(seed)
  return torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(),
                             torch.nn.Linear(width, NUM_CLASSES))


@torch.no_grad()
def log_probs(model: torch.nn.Module, x_NxD: torch.Tensor) -> np.ndarray:
  """Eval-mode log-softmax of the model on x, as (N, C) NumPy."""
  model.eval()
  log_probs_NxC = F.log_softmax(model(x_NxD), dim=-1).numpy()
  model.train()
  return log_probs_NxC


def checkpoint_steps(steps_per_epoch: int, epochs: int) -> set[int]:
  """Steps recorded: every EARLY_EVERY over the first EARLY_EPOCHS, then every epoch's end."""
  early = range(0, min(EARLY_EPOCHS, epochs) * steps_per_epoch, EARLY_EVERY)
  return set(early) | {e * steps_per_epoch for e in range(1, epochs + 1)}


def train_member(writer: TrajectoryWriter, m: int, hp: dict, data, probes_x, epochs: int
                 ) -> torch.nn.Module:
  """Trains member m from scratch, recording its probes at every checkpoint step."""
  x_train_NxD, y_train_N = data
  model = make_mlp(hp['width'], hp['seed'])
  optimizer = torch.optim.SGD(model.parameters(), lr=hp['learning_rate'], momentum=MOMENTUM)
  order = torch.Generator().manual_seed(hp['seed'])
  steps_per_epoch = -(-len(y_train_N) // BATCH_SIZE)
  record_at = checkpoint_steps(steps_per_epoch, epochs)

  def record(step: int) -> None:
    for split, x_NxD in probes_x.items():
      writer.write(m, step, split, log_probs(model, x_NxD), epoch=step / steps_per_epoch,  # <-
                   kind='log_probs')

  step = 0
  record(step)
  for _ in range(epochs):
    for batch_B in torch.randperm(len(y_train_N), generator=order).split(BATCH_SIZE):
      loss = F.cross_entropy(model(x_train_NxD[batch_B]), y_train_N[batch_B])
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      step += 1
      if step in record_at:
        record(step)
  return model


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='The store to write (a new directory).')
  parser.add_argument('--epochs', type=int, default=20, help='Epochs per member.')
  parser.add_argument('--save_dir', default=None,
                      help="If given, each member's final weights go to SAVE_DIR/member_<m>.pt.")
  args = parser.parse_args()
  torch.set_num_threads(TORCH_THREADS)

  splits = digits_splits()
  probes = choose_probes(splits, np.random.default_rng(SPLIT_SEED))
  probes_x = {s: torch.from_numpy(splits[s][0][p]) for s, p in probes.items()}
  members = [dict(arch='mlp', width=w, optimizer='sgd', learning_rate=lr, seed=s)
             for w, lr, s in itertools.product(WIDTHS, LEARNING_RATES, SEEDS)]
  train_data = tuple(torch.from_numpy(a) for a in splits['train'][:2])
  if args.save_dir:
    os.makedirs(args.save_dir, exist_ok=True)

  with TrajectoryWriter(  # <-
      args.workdir, members, labels={s: splits[s][1][p] for s, p in probes.items()},
      num_classes=NUM_CLASSES, probe_indices={s: splits[s][2][p] for s, p in probes.items()}
  ) as writer:
    for m, hp in enumerate(members):
      start = time.perf_counter()
      model = train_member(writer, m, hp, train_data, probes_x, args.epochs)
      accuracy = {s: (log_probs(model, torch.from_numpy(x)).argmax(-1) == y).mean()
                  for s, (x, y, _) in splits.items()}
      print(f'member {m} {hp}: train accuracy {accuracy["train"]:.3f}, test '
            f'{accuracy["test"]:.3f}, {time.perf_counter() - start:.1f} s', flush=True)
      if args.save_dir:
        torch.save(model.state_dict(), os.path.join(args.save_dir, f'member_{m}.pt'))
  print(f'Wrote {len(members)} members to {args.workdir}; map them with\n'
        f'  python -m ensembles.launch.analyze --workdir={args.workdir} --color_by=width')


if __name__ == '__main__':
  main()
