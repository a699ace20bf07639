r"""The README's main job: 96 networks on scikit-learn's digits, offline.

3 architectures x 2 optimizers x 2 learning rates x augmentation on/off x
4 seeds = 96 members in 6 cohorts (arch x optimizer), 20 epochs each.

Run:
  python -m launch.run --config=configs/quickstart.py --workdir=/tmp/quickstart
Tiny variant (a few members, a couple of epochs; used by the tests):
  python -m launch.run --config=configs/quickstart.py:tiny --workdir=/tmp/quickstart_tiny
"""

from ensembles import experiment


def get_config(arg: str | None = None):
  config = experiment.default_config()
  h = config.hparams
  h.dataset = 'digits'
  h.width = 32
  h.depth = 2
  h.batch_size = 64
  h.epochs = 20
  h.schedule = 'cosine'
  h.momentum = 0.9
  s = config.sweep
  s.arch = ('mlp', 'cnn', 'vit')
  s.optimizer = ('sgd', 'adam')
  # One grid for both optimizers: large for Adam, small for SGD with momentum.
  s.learning_rate = (0.003, 0.01)
  s.augment = (False, True)
  s.seed = (0, 1, 2, 3)
  if arg == 'tiny':
    h.width = 16
    h.epochs = 2
    s.arch = ('mlp', 'cnn')
    s.optimizer = ('sgd',)
    s.learning_rate = (0.01, 0.05)
    s.augment = (False, True)
    s.seed = (0,)
  elif arg:
    raise ValueError(f'configs/quickstart.py: unknown argument {arg!r}; accepted: tiny.')
  return config
