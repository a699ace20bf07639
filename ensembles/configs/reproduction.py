r"""The reproduction report's sweep (docs/REPRODUCTION.md): digits (all five families), mnist1d
or mnist5k.

A one-factor-at-a-time design. Per architecture family (mlp, cnn, resnet, vit, convmixer)
there is a base configuration (SGD momentum 0.9, learning rate 0.05, batch 64, no weight
decay, no augmentation, default init, the family's small width) and variants that each change
one factor of it: a wider network, SGD-Nesterov, Adam (with its own learning rate), a second
learning rate, a second batch size, weight decay, augmentation, and two initialisations
(pre-trained on shuffled labels; pre-trained on a 10% subset). Every configuration runs with
the same 5 seeds, so each factor has seed-matched pairs that differ in it alone, and every
configuration has 5 seeds for the seed-only baseline: 5 families x 10 configurations x 5
seeds = 250 members in 35 cohorts.

Sized for a 2-core CPU (run times in docs/REPRODUCTION.md): widths 8-64, 15 epochs, digits
(8x8). The training half of the probe set is 720 stratified examples (the paper used every
other training example), the test half all 359.

Argument 'mnist1d': the same design on mnist1d (1-D signals of length 40), with the two
families that take 1-D input (mlp 64 -> 256 units, cnn 8 -> 16 channels), 30 epochs, no
augmentation variant (a no-op on 1-D signals here): 2 families x 9 configurations x 5 seeds =
90 members in 14 cohorts. Probes: 2,000
stratified training examples (every other one, as the paper) and all 1,000 test examples. Its
report files are tagged 'mnist1d' (docs/figures/mnist1d_*.png,
docs/reproduction_numbers_mnist1d.md and .json).

Argument 'mnist5k': the same design, augmentation included (random crops, 3 px padding), on
mnist5k (4,000 train / 1,000 test real MNIST images, 28x28x1), with mlp (32 -> 128 units) and
cnn (8 -> 16 channels) only: 2 families x 10 configurations x 5 seeds = 100 members. Sized for
training within a 10-minute budget on a 2-core CPU: the cnn half dominates on 28x28 images,
so the sweep trains 2 epochs, as many as the cnn's measured rate fits in the budget (rates,
estimate, run time and how far the cnn base trains: docs/REPRODUCTION.md, "mnist5k").
Probes: 1,000 stratified training examples and all 1,000 test examples. Report files tagged
'mnist5k'.

Regenerate every number and figure of docs/REPRODUCTION.md (trains, resuming what the
workdir holds, then analyses), one command per dataset:
  python -m ensembles.launch.reproduce --workdir=workdirs/reproduction
  python -m ensembles.launch.reproduce --config_arg=mnist1d --workdir=workdirs/reproduction_mnist1d
  python -m ensembles.launch.reproduce --config_arg=mnist5k --workdir=workdirs/reproduction_mnist5k
Train only:
  python -m ensembles.launch.train --config=ensembles/configs/reproduction.py --workdir=workdirs/reproduction
  python -m ensembles.launch.train --config=ensembles/configs/reproduction.py:mnist1d \
      --workdir=workdirs/reproduction_mnist1d
  python -m ensembles.launch.train --config=ensembles/configs/reproduction.py:mnist5k \
      --workdir=workdirs/reproduction_mnist5k
Tiny variants (one family, 1 epoch, 2 seeds; used by the tests; 'mnist1d_tiny' and
'mnist5k_tiny' likewise):
  python -m ensembles.launch.reproduce --config_arg=tiny --workdir=/tmp/repro_tiny --docs_dir=/tmp/repro_docs
"""

from typing import NamedTuple

from ensembles.configs import common

# Per family: the base model and its wider variant (resnet: Wide-ResNet-10 widen factor k).
FAMILIES = {
    'mlp': dict(model=dict(arch='mlp', depth=2), widths=(16, 64)),
    'cnn': dict(model=dict(arch='cnn', depth=2), widths=(8, 16)),
    'resnet': dict(model=dict(arch='resnet', depth=10), widths=(1, 2)),
    'vit': dict(model=dict(arch='vit', depth=2, num_heads=2, patch_size=2), widths=(16, 32)),
    'convmixer': dict(model=dict(arch='convmixer', depth=2, patch_size=2, kernel_size=3),
                      widths=(16, 32)),
}

BASE_LEARNING_RATE = 0.05    # SGD and Nesterov, batch 64
SECOND_LEARNING_RATE = 0.02  # the learning-rate variant
ADAM_LEARNING_RATE = 1e-3    # the Adam variant (Adam needs its own scale)
BASE_BATCH_SIZE = 64
SECOND_BATCH_SIZE = 128      # same learning rate: half the steps
WEIGHT_DECAY = 5e-4          # the paper's value
SEEDS = (0, 1, 2, 3, 4)
EPOCHS = 15
TRAIN_PROBE_SIZE = 720       # of 1,438 training examples
INIT_EPOCHS = 5              # pretraining of the init variants, in full-train-set epochs
INIT_SUBSET = 0.1            # init='subset': fraction of the train set pretrained on

# Variant name -> the hparams it changes relative to its family's base ('width' is filled in
# per family). The base configuration itself is the variant 'base'. Order = member order.
VARIANTS = {
    'base': {},
    'width': None,
    'learning_rate': dict(learning_rate=SECOND_LEARNING_RATE),
    'nesterov': dict(optimizer='nesterov'),
    'adam': dict(optimizer='adam', learning_rate=ADAM_LEARNING_RATE),
    'batch_size': dict(batch_size=SECOND_BATCH_SIZE),
    'weight_decay': dict(weight_decay=WEIGHT_DECAY),
    'augment': dict(augment=True),
    'random_labels': dict(init='random_labels', init_epochs=INIT_EPOCHS),
    'subset': dict(init='subset', init_epochs=INIT_EPOCHS, init_subset=INIT_SUBSET),
}

# mnist1d (4,000 train / 1,000 test signals of length 40, 10 classes). Only the families that
# accept 1-D (L, F) input: mlp (flattens) and cnn (convolves along the signal); resnet, vit and
# convmixer take (H, W, F) images only (ensembles.training.models). Wider and longer than digits,
# because mnist1d is harder (the 10-epoch trial runs that set this: docs/REPRODUCTION.md).
MNIST1D_FAMILIES = {
    'mlp': dict(model=dict(arch='mlp', depth=2), widths=(64, 256)),
    'cnn': dict(model=dict(arch='cnn', depth=2), widths=(8, 16)),
}
MNIST1D_EPOCHS = 30
MNIST1D_TRAIN_PROBE_SIZE = 2000  # of 4,000: every other training example, as the paper
# Random crops and flips leave 1-D signals unchanged in this project (ensembles.data: no crop
# padding, no flip), so an 'augment' variant would be the base configuration under another name.
MNIST1D_DROPPED_VARIANTS = ('augment',)

# mnist5k (4,000 train / 1,000 test real MNIST images, 28x28x1, 10 classes). The two families
# cheapest on 28x28 for a 2-core CPU. Sized so that training fits a 10-minute budget there (see
# the module docstring); cnn widths 8 -> 16 for 2 epochs, because narrower cnns trained for
# longer ended too early in training to compare (docs/REPRODUCTION.md, "mnist5k").
MNIST5K_FAMILIES = {
    'mlp': dict(model=dict(arch='mlp', depth=2), widths=(32, 128)),
    'cnn': dict(model=dict(arch='cnn', depth=2), widths=(8, 16)),
}
MNIST5K_EPOCHS = 2
MNIST5K_TRAIN_PROBE_SIZE = 1000  # of 4,000 stratified training examples

# The test-sized variants (arguments 'tiny', 'mnist1d_tiny' and 'mnist5k_tiny').
TINY_FAMILIES = ('mlp',)
TINY_WIDTHS = (4, 8)
TINY_VARIANTS = ('base', 'width', 'learning_rate', 'augment', 'random_labels', 'subset')
TINY_SEEDS = (0, 1)
TINY_EPOCHS = 1
TINY_TRAIN_PROBE_SIZE = 100

# Dataset argument -> the embedded dataset; each also has a '<argument>_tiny' form ('tiny' for
# digits). Datasets other than digits tag their report files with their name.
DATASET_ARGS = {'': 'digits', 'mnist1d': 'mnist1d', 'mnist5k': 'mnist5k'}
TINY_SUFFIX = 'tiny'
ARGS = tuple(a for d in DATASET_ARGS for a in (d, f'{d}_{TINY_SUFFIX}' if d else TINY_SUFFIX))


class SweepSpec(NamedTuple):
  """What one argument of ``get_config`` trains.

  Attributes:
    dataset: the embedded dataset.
    families: family -> dict(model=hparams of the family, widths=(base, wide)).
    variant_names: the variants of every family, in member order.
    seeds: the seeds of every configuration.
    epochs: training length of every member.
    train_probe_size: stratified training examples whose predictions are recorded.
    docs_tag: '' for digits; otherwise prefixes the report's figure names and suffixes its
      numbers files (``ensembles.reproduction.report``), so datasets do not overwrite each other.
  """
  dataset: str
  families: dict[str, dict]
  variant_names: tuple[str, ...]
  seeds: tuple[int, ...]
  epochs: int
  train_probe_size: int
  docs_tag: str


def sweep_spec(arg: str | None = None) -> SweepSpec:
  """The sweep of one argument of ``get_config`` (None or '': the full digits sweep)."""
  arg = arg or ''
  if arg not in ARGS:
    raise ValueError(f'ensembles/configs/reproduction.py: unknown argument {arg!r}; accepted: '
                     + ', '.join(repr(a) for a in ARGS) + '.')
  tiny = arg.endswith(TINY_SUFFIX)
  dataset_arg = arg.removesuffix(TINY_SUFFIX).rstrip('_')
  dataset = DATASET_ARGS[dataset_arg]
  one_d = dataset == 'mnist1d'
  names = tuple(n for n in VARIANTS if not (one_d and n in MNIST1D_DROPPED_VARIANTS))
  if tiny:
    families = {f: {**FAMILIES[f], 'widths': TINY_WIDTHS} for f in TINY_FAMILIES}
    return SweepSpec(dataset, families, tuple(n for n in names if n in TINY_VARIANTS),
                     TINY_SEEDS, TINY_EPOCHS, TINY_TRAIN_PROBE_SIZE, dataset_arg)
  if one_d:
    return SweepSpec(dataset, MNIST1D_FAMILIES, names, SEEDS, MNIST1D_EPOCHS,
                     MNIST1D_TRAIN_PROBE_SIZE, dataset_arg)
  if dataset == 'mnist5k':
    return SweepSpec(dataset, MNIST5K_FAMILIES, names, SEEDS, MNIST5K_EPOCHS,
                     MNIST5K_TRAIN_PROBE_SIZE, dataset_arg)
  return SweepSpec(dataset, FAMILIES, names, SEEDS, EPOCHS, TRAIN_PROBE_SIZE, dataset_arg)


def variants(arg: str | None = None) -> dict[tuple[str, str], dict]:
  """(family, variant name) -> the hparams that configuration sets, in member order."""
  spec = sweep_spec(arg)
  out = {}
  for family, fam in spec.families.items():
    base_width, wide = fam['widths']
    for name in spec.variant_names:
      change = dict(width=wide) if name == 'width' else VARIANTS[name]
      out[family, name] = {**fam['model'], 'width': base_width, **change}
  return out


def get_config(arg: str | None = None):
  spec = sweep_spec(arg)
  config = common.default_config()
  h = config.hparams
  h.dataset = spec.dataset
  h.optimizer = 'sgd'
  h.momentum = 0.9
  h.learning_rate = BASE_LEARNING_RATE
  h.batch_size = BASE_BATCH_SIZE
  h.weight_decay = 0.0
  h.augment = False
  h.schedule = 'cosine'
  h.epochs = spec.epochs
  config.record.train_probe_size = spec.train_probe_size
  config.sweep.seed = spec.seeds
  config.variants = tuple(variants(arg).values())
  return config
