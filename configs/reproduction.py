r"""The reproduction report's sweep (docs/REPRODUCTION.md): digits, all five families.

A one-factor-at-a-time design. Per architecture family (mlp, cnn, resnet, vit, convmixer)
there is a base configuration (SGD momentum 0.9, learning rate 0.05, batch 64, no weight
decay, no augmentation, default init, the family's small width) and variants that each change
one factor of it: a wider network, SGD-Nesterov, Adam (with its own learning rate), a second
learning rate, a second batch size, weight decay, augmentation, and two initialisations
(pre-trained on shuffled labels; pre-trained on a 10% subset). Every configuration runs with
the same 5 seeds, so each factor has seed-matched pairs that differ in it alone, and every
configuration has 5 seeds for the seed-only baseline: 5 families x 10 configurations x 5
seeds = 250 members in 35 cohorts.

Sized for a 2-core CPU (training took 8.2 min at load average 2-4): widths 8-64, 15 epochs,
digits (8x8). The
training half of the probe set is 720 stratified examples (the paper used every other
training example), the test half all 359.

Regenerate every number and figure of docs/REPRODUCTION.md (trains, resuming what the
workdir holds, then analyses):
  python -m launch.reproduce --workdir=workdirs/reproduction
Train only:
  python -m launch.train --config=configs/reproduction.py --workdir=workdirs/reproduction
Tiny variant (one family, 1 epoch, 2 seeds; used by the tests):
  python -m launch.reproduce --config_arg=tiny --workdir=/tmp/repro_tiny --docs_dir=/tmp/repro_docs
"""

from ensembles import experiment

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

# The test-sized variant.
TINY_FAMILIES = ('mlp',)
TINY_WIDTHS = (4, 8)
TINY_VARIANTS = ('base', 'width', 'learning_rate', 'augment', 'random_labels', 'subset')
TINY_SEEDS = (0, 1)
TINY_EPOCHS = 1
TINY_TRAIN_PROBE_SIZE = 100


def variants(tiny: bool = False) -> dict[tuple[str, str], dict]:
  """(family, variant name) -> the hparams that configuration sets, in member order."""
  out = {}
  for family in (TINY_FAMILIES if tiny else FAMILIES):
    spec = FAMILIES[family]
    base_width, wide = TINY_WIDTHS if tiny else spec['widths']
    for name, change in VARIANTS.items():
      if tiny and name not in TINY_VARIANTS:
        continue
      change = dict(width=wide) if name == 'width' else change
      out[family, name] = {**spec['model'], 'width': base_width, **change}
  return out


def get_config(arg: str | None = None):
  if arg not in (None, '', 'tiny'):
    raise ValueError(f'configs/reproduction.py: unknown argument {arg!r}; accepted: tiny.')
  tiny = arg == 'tiny'
  config = experiment.default_config()
  h = config.hparams
  h.dataset = 'digits'
  h.optimizer = 'sgd'
  h.momentum = 0.9
  h.learning_rate = BASE_LEARNING_RATE
  h.batch_size = BASE_BATCH_SIZE
  h.weight_decay = 0.0
  h.augment = False
  h.schedule = 'cosine'
  h.epochs = TINY_EPOCHS if tiny else EPOCHS
  config.record.train_probe_size = TINY_TRAIN_PROBE_SIZE if tiny else TRAIN_PROBE_SIZE
  config.sweep.seed = TINY_SEEDS if tiny else SEEDS
  config.variants = tuple(variants(tiny).values())
  return config
