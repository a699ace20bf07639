r"""Builds a trajectories store from prediction arrays saved by any pipeline (no JAX needed).

  python -m ensembles.launch.import_arrays --workdir=DIR --kind=probs|log_probs|logits \
      --hparams=FILE.csv|FILE.json --probs=SPLIT:PATH[:KEY] --labels=SPLIT:PATH[:KEY] \
      [--probs=... --labels=... for more splits] --steps=LIST|PATH[:KEY] \
      --epochs=LIST|PATH[:KEY] [--probe_indices=SPLIT:PATH[:KEY]] [--dtype=float16]

For example (docs/IMPORT.md has more):

  ensembles-import --workdir=/tmp/imported --kind=log_probs --hparams=hparams.csv \
      --probs=train:preds.h5:/train --probs=test:preds.h5:/test \
      --labels=train:labels.npz:train --labels=test:labels.npz:test --epochs=0,1,2,5,10

Each split's predictions are one (members, T, N, C) array, or one (T, N, C) file per member
(a PATH holding {m}: runs/{m}/train.npy); KEY names the array inside an .npz, HDF5 file or Zarr
group. Member m is row m of --hparams. --steps or --epochs (at least one) gives the T
checkpoints: a comma-separated list or an array, (T,) shared or (members, T) per member.
Everything is checked before anything is written; no pickle is ever loaded.
"""

import time

from absl import flags

from ensembles.launch import runtime
from ensembles.store import importing
from ensembles.store import members as layout
from ensembles.store.format import STORAGE_DTYPES

flags.declare_key_flag('verbose')

_WORKDIR = flags.DEFINE_string('workdir', None, 'The new store (absent or empty).')
_KIND = flags.DEFINE_enum('kind', None, list(importing.KINDS),
                          'What the arrays hold (natural logs for log_probs); never guessed.')
_HPARAMS = flags.DEFINE_string(
    'hparams', None, 'Members\' hyperparameters: .csv (header, one row per member), .json (a '
    'list of one object per member) or .jsonl.')
_PROBS = flags.DEFINE_multi_string(
    'probs', [], 'SPLIT:PATH[:KEY], once per split: a (members, T, N, C) array, or a PATH '
    'with {m}, one (T, N, C) file per member (.npy, .npz, HDF5, Zarr).')
_LABELS = flags.DEFINE_multi_string(
    'labels', [], 'SPLIT:PATH[:KEY], once per split: the (N,) integer labels of its probes '
    '(also .txt, .csv).')
_STEPS = flags.DEFINE_string(
    'steps', None, 'Checkpoints\' training steps: 0,100,200 or PATH[:KEY] of a (T,) or '
    '(members, T) array (NaN: not recorded). Without it, checkpoint t has step t.')
_EPOCHS = flags.DEFINE_string('epochs', None, 'Checkpoints\' epochs, as --steps.')
_PROBE_INDICES = flags.DEFINE_multi_string(
    'probe_indices', [], 'SPLIT:PATH[:KEY]: (N,) indices of the probes in their dataset.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', list(STORAGE_DTYPES), 'Storage dtype.')
flags.mark_flags_as_required(['workdir', 'kind', 'hparams'])

# Seconds between two progress lines.
PROGRESS_EVERY_SECONDS = 10.0


def _by_split(flag: flags.FlagHolder) -> dict[str, str]:
  """``--flag=SPLIT:PATH[:KEY]`` values as {split: 'PATH[:KEY]'}."""
  out = {}
  for value in flag.value:
    split, _, spec = value.partition(':')
    if not spec or not layout.SPLIT_NAME.fullmatch(split):
      raise ValueError(f'--{flag.name}={value!r}: accepted SPLIT:PATH[:KEY], e.g. '
                       f'--{flag.name}=train:train.npy or --{flag.name}=test:preds.h5:/test.')
    if split in out:
      raise ValueError(f'--{flag.name} gives split {split!r} twice.')
    out[split] = spec
  return out


def _progress(clock=time.monotonic):
  last = [clock()]

  def say(done: int, total: int) -> None:
    if clock() - last[0] >= PROGRESS_EVERY_SECONDS or done == total:
      last[0] = clock()
      print(f'Imported {done:,} of {total:,} members', flush=True)
  return say


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}: every input is a flag (--help).')
  if not _PROBS.value:
    raise ValueError('--probs: give each split\'s predictions, e.g. --probs=train:train.npy.')
  summary = importing.import_arrays(
      _WORKDIR.value, _by_split(_PROBS), _by_split(_LABELS), _HPARAMS.value, kind=_KIND.value,
      steps=_STEPS.value, epochs=_EPOCHS.value, probe_indices=_by_split(_PROBE_INDICES),
      dtype=_DTYPE.value, progress=_progress())
  print('\n'.join(summary.lines()))
  print(f'Open it with ensembles.load_trajectories({summary.workdir!r}); map it with '
        f'ensembles-analyze --workdir={summary.workdir}')


def run():
  """The ``ensembles-import`` command."""
  runtime.run(main)


if __name__ == '__main__':
  run()
