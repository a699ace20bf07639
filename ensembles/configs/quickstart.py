r"""The README's main job: 96 networks on scikit-learn's digits, offline.

3 architectures x 2 optimizers (each with 2 learning rates of its own scale) x
augmentation on/off x 4 seeds = 96 members in 6 cohorts (architecture x optimizer), width 16,
12 epochs: sized to train and analyse in minutes on a 2-core CPU (run times in
benchmarks/README.md, "Run times of the configs").

Run:
  python -m ensembles.launch.run --config=ensembles/configs/quickstart.py --workdir=workdirs/quickstart
Tiny variant (4 members, used by the tests):
  python -m ensembles.launch.run --config=ensembles/configs/quickstart.py:tiny --workdir=/tmp/quickstart_tiny
"""

from ensembles.configs import common


def get_config(arg: str | None = None):
  config = common.default_config()
  h = config.hparams
  h.dataset = 'digits'
  h.width = 16
  h.depth = 2
  h.batch_size = 64
  h.epochs = 12
  h.schedule = 'cosine'
  h.momentum = 0.9
  config.sweep.arch = ('mlp', 'cnn', 'vit')
  config.sweep.augment = (False, True)
  config.sweep.seed = (0, 1, 2, 3)
  config.variants = (
      dict(optimizer='sgd', learning_rate=(0.02, 0.05)),
      dict(optimizer='adam', learning_rate=(0.001, 0.003)),
  )
  if arg == 'tiny':
    h.width = 8
    h.epochs = 2
    config.sweep.arch = ('mlp', 'cnn')
    config.sweep.seed = (0,)
    config.variants = (dict(optimizer='sgd', learning_rate=0.05),)
  elif arg:
    raise ValueError(f'ensembles/configs/quickstart.py: unknown argument {arg!r}; accepted: tiny.')
  return config
