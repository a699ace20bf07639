"""The cohort program: typed state, a pure per-member train step, vmapped and looped.

Everything inside a cohort is one XLA program: the member axis is the leading
axis of every array in ``CohortState`` and ``MemberHparams``; per-member
differences (seed, learning rate, schedule, momentum, weight decay,
augmentation, label smoothing, init scale) are arrays, never Python values.

Over 400 lines, on purpose: the state types, the per-member step, the member-block loop,
pretraining and the ahead-of-time compile are one program; split, each part would need the
others' private shapes. Placement and memory fitting live in ``placement``.

Layout: the member axis is sharded over the devices, and each device runs its own members
(``shard_map``); nothing crosses devices while training. A device trains its members in
blocks of ``member_block`` (on CPU 8 mlps, whose state and activations then stay in cache,
or 1 of any other architecture; on accelerators all at once, or the largest halving of that
which fits the device's memory, ``compile_to_fit``): a ``lax.map`` over blocks,
each running every step of a chunk before the next block starts, since members are
independent between recordings. A block's arithmetic is the member's own, so the block size
changes results only through float rounding (XLA may pick other kernels for another batch
count), which training can amplify in a few members over many steps, exactly as a one-ulp
change of their initial weights does.

Randomness: each member's key is ``PRNGKey(seed)``, so a member gets the same
initialisation and data order whatever cohort it trains in. Its data order in
epoch ``e`` is a permutation from ``fold_in(data_key, e)``; its augmentation at
step ``s`` uses ``fold_in(aug_key, s)``. Nothing random is stored: resuming at
any step needs only the step.

Initialisations (hparam ``init``): 'default' starts from the network's initialiser. The
others pretrain the initialised network before step 0, then reset its optimizer: for
``init_epochs`` epochs' worth of steps (of the full train set) on shuffled labels
('random_labels': the train labels permuted across examples, class balance kept) or on a
random fraction ``init_subset`` of the train set ('subset'), at the member's constant peak
learning rate, with randomness from ``fold_in(key, PRETRAIN_STREAM)``. Step 0 of the
trajectory is the pretrained network.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

from ensembles.training import data as data_lib
from ensembles.training import devices
from ensembles.training import models as models_lib
from ensembles.training import optim
from ensembles.training import sweep as sweep_lib

# init runs once per cohort; on CPU, XLA's full optimisation of its threefry RNG costs far more
# compile time than the program ever runs (benchmarks/README.md): level 0 is enough.
_INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 0}

# Members trained together per device (``CohortProgram.member_block``) on CPU, by architecture
# (others: 1); accelerators vmap all of a device's members at once (they want the widest batched
# ops). A block of 8 mlps keeps its state and activations in cache and shares each op's
# dispatch; convolutions already loop over members on CPU (``models.conv``), and a block of 1
# spares them the member axis altogether, as it spares the attention's small batched matmuls.
# Measured per block size and architecture in benchmarks/README.md ("Member blocks").
CPU_MEMBER_BLOCKS = {'mlp': 8}


def _to_compute_dtype(dtype: str, tree):
  """``tree`` with its floating leaves cast to ``dtype`` for a training pass (gradients come
  back float32 through the cast); unchanged for float32."""
  if dtype == 'float32':
    return tree
  cast = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
  return jax.tree.map(cast, tree)


def default_member_block(arch: str) -> int:
  """The default ``member_block`` for ``arch`` on the default backend (0: one block)."""
  if jax.default_backend() != 'cpu':
    return 0
  return CPU_MEMBER_BLOCKS.get(arch, 1)


# Streams derived from a member's key with fold_in (any distinct constants do).
INIT_STREAM, DATA_STREAM, AUG_STREAM, PRETRAIN_STREAM, CHOICE_STREAM = 0, 1, 2, 3, 4


@flax.struct.dataclass
class MemberHparams:
  """Per-member traced hyperparameters, member axis first."""
  key: jax.Array              # (E, 2) uint32, PRNGKey(seed)
  learning_rate: jax.Array    # (E,) float32, peak
  momentum: jax.Array         # (E,) float32
  weight_decay: jax.Array     # (E,) float32
  schedule: jax.Array         # (E,) int32, index into optim.SCHEDULES
  augment: jax.Array          # (E,) bool
  label_smoothing: jax.Array  # (E,) float32
  init_scale: jax.Array       # (E,) float32
  real: jax.Array             # (E,) bool: False for padding members (never trained or recorded)


@flax.struct.dataclass
class MemberState:
  params: flax.core.FrozenDict | dict
  model_state: flax.core.FrozenDict | dict
  opt_state: optax.OptState


@flax.struct.dataclass
class CohortState:
  """What a cohort needs to continue training; saved for resume."""
  step: jax.Array          # () int32, shared: members run in lockstep
  members: MemberState     # every leaf (E, ...)
  alive: jax.Array         # (E,) bool: False once a member diverged
  diverged_at: jax.Array   # (E,) int32: step of the first non-finite update, -1 if none


@flax.struct.dataclass
class Probes:
  """Normalised probe inputs and labels on which predictions are recorded."""
  x_train: jax.Array
  y_train: jax.Array
  x_test: jax.Array
  y_test: jax.Array


@flax.struct.dataclass
class Evaluation:
  """Eval-mode predictions and metrics of every member on the probes."""
  train_probs: jax.Array     # (E, N_train, C)
  test_probs: jax.Array      # (E, N_test, C)
  train_loss: jax.Array      # (E,)
  train_accuracy: jax.Array  # (E,)
  test_loss: jax.Array       # (E,)
  test_accuracy: jax.Array   # (E,)


def member_hparams(hparams: Sequence[sweep_lib.Hparams], size: int | None = None) -> MemberHparams:
  """Stacks the traced hyperparameters of a cohort's members.

  Args:
    hparams: the members' hparams.
    size: pad to this many members (copies of the first, marked not ``real``), e.g. to a
      multiple of the device count.
  """
  real = [True] * len(hparams) + [False] * ((size or len(hparams)) - len(hparams))
  hparams = list(hparams) + [hparams[0]] * (len(real) - len(hparams))
  f32 = lambda name: jnp.asarray([getattr(h, name) for h in hparams], jnp.float32)
  return MemberHparams(
      key=jnp.stack([jax.random.PRNGKey(h.seed) for h in hparams]),
      learning_rate=f32('learning_rate'),
      momentum=f32('momentum'),
      weight_decay=f32('weight_decay'),
      schedule=jnp.asarray([optim.SCHEDULES.index(h.schedule) for h in hparams], jnp.int32),
      augment=jnp.asarray([h.augment for h in hparams], bool),
      label_smoothing=f32('label_smoothing'),
      init_scale=f32('init_scale'),
      real=jnp.asarray(real, bool),
  )


@dataclasses.dataclass(frozen=True)
class CohortProgram:
  """The static description of a cohort's program and its pure functions.

  Attributes:
    network: the model (from ``models.build_network``).
    info: the dataset's static info.
    optimizer: optimizer family (``optim.OPTIMIZERS``).
    batch_size: examples per step per member.
    steps_per_epoch: ``num_train // batch_size`` (last partial batch dropped).
    total_steps: ``epochs * steps_per_epoch``.
    warmup_steps: linear warmup length of the 'warmup_cosine' schedule.
    eval_batch_size: probe examples evaluated at once (bounds eval memory).
    init_choice: the members' initialisation (``sweep.INITS``; see the module docstring).
    pretrain_steps: steps of pretraining before step 0 (0 for init 'default').
    subset_size: train examples pretrained on with init 'subset'.
    any_augment: whether some member augments; if none does, augmentation is left out of the
      program (it costs ~20% of an mlp step on digits even when every member disables it).
    member_block: train at most this many members of a device together (0: all of them).
      ``train``, ``pretrain`` and ``evaluate`` loop (``lax.map``) over blocks of members,
      each block running all of a chunk's steps before the next starts: members are
      independent between recordings (defaults: ``default_member_block``).
    compute_dtype: dtype of the training forward and backward passes (``COMPUTE_DTYPES``):
      parameters and inputs are cast to it for each step, while the parameters, optimizer
      state, normalisation statistics and the loss stay float32 (mixed precision).
      Evaluation, and so every recorded probability, is float32 whatever it is.
  """
  network: models_lib.Network
  info: data_lib.DatasetInfo
  optimizer: str
  batch_size: int
  steps_per_epoch: int
  total_steps: int
  warmup_steps: int
  eval_batch_size: int
  init_choice: str = 'default'
  pretrain_steps: int = 0
  subset_size: int = 0
  any_augment: bool = True
  member_block: int = 0
  compute_dtype: str = 'float32'

  @classmethod
  def for_cohort(cls, cohort: sweep_lib.Cohort, info: data_lib.DatasetInfo,
                 eval_batch_size: int, member_block: int = 0,
                 compute_dtype: str = 'float32') -> CohortProgram:
    """The program of ``cohort``; ``member_block`` 0 takes ``default_member_block``."""
    h = cohort.shared
    spe = data_lib.steps_per_epoch(info.num_train, h.batch_size)
    subset_size = round(h.init_subset * info.num_train)
    if h.init == 'subset' and subset_size < h.batch_size:
      raise ValueError(f'init_subset={h.init_subset} keeps {subset_size} of the '
                       f'{info.num_train} training examples, fewer than one batch '
                       f'(batch_size={h.batch_size}); accepted: init_subset >= '
                       f'{h.batch_size / info.num_train:.3g}.')
    return cls(
        network=models_lib.build_network(h.model_config, info.input_shape, info.num_classes),
        info=info, optimizer=h.optimizer, batch_size=h.batch_size, steps_per_epoch=spe,
        total_steps=h.epochs * spe, warmup_steps=round(h.warmup_epochs * spe),
        eval_batch_size=eval_batch_size, init_choice=h.init,
        pretrain_steps=0 if h.init == 'default' else h.init_epochs * spe,
        subset_size=subset_size, any_augment=any(m.augment for m in cohort.hparams),
        member_block=member_block or default_member_block(h.arch), compute_dtype=compute_dtype)

  # -- per member -----------------------------------------------------------

  def _fresh_optimizer_state(self, hp: MemberHparams, params) -> optax.OptState:
    tx = optim.make_optimizer(self.optimizer, hp.learning_rate, hp.momentum, hp.weight_decay)
    return tx.init(params)

  def _init_member(self, hp: MemberHparams) -> MemberState:
    init_key = jax.random.fold_in(hp.key, INIT_STREAM)
    params, model_state = self.network.init(init_key, hp.init_scale)
    return MemberState(params=params, model_state=model_state,
                       opt_state=self._fresh_optimizer_state(hp, params))

  def _member_step(self, dataset: data_lib.Dataset, hp: MemberHparams, member: MemberState,
                   alive, perm, step, labels_N=None, scheduled=True):
    """One SGD step of one member; returns (new state, still alive).

    ``labels_N`` replaces the train labels (pretraining on shuffled labels); ``scheduled``
    False holds the learning rate at its peak (pretraining).
    """
    x_BxS, y_B = data_lib.gather_batch(
        dataset.x_train, dataset.y_train if labels_N is None else labels_N, perm,
        step % self.steps_per_epoch, self.batch_size)
    x_BxS = data_lib.normalize(x_BxS, dataset.mean, dataset.std)
    if self.any_augment:
      aug_key = jax.random.fold_in(jax.random.fold_in(hp.key, AUG_STREAM), step)
      x_BxS = data_lib.augment(aug_key, x_BxS, hp.augment, self.info)
    targets_BxC = optax.smooth_labels(jax.nn.one_hot(y_B, self.info.num_classes),
                                      hp.label_smoothing)

    def loss_fn(params):
      # Normalisation statistics stay float32 (Flax's norms reduce in float32).
      params, x = _to_compute_dtype(self.compute_dtype, (params, x_BxS))
      logits_BxC, model_state = self.network.apply(params, member.model_state, x, train=True)
      loss = optax.softmax_cross_entropy(logits_BxC.astype(jnp.float32), targets_BxC).mean()
      return loss, model_state

    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(member.params)
    lr = hp.learning_rate
    if scheduled:
      lr = lr * optim.schedule_multiplier(hp.schedule, step, self.total_steps, self.warmup_steps)
    tx = optim.make_optimizer(self.optimizer, 0.0, 0.0, 0.0)  # Values come from the state.
    updates, opt_state = tx.update(grads, optim.with_learning_rate(member.opt_state, lr),
                                   member.params)
    new = MemberState(params=optax.apply_updates(member.params, updates),
                      model_state=model_state, opt_state=opt_state)
    # A member whose loss or update is not finite is frozen where it stands.
    ok = alive & jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(updates))
    new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, member)
    return new, ok

  def _member_eval(self, probes: Probes, member: MemberState):
    def predict(x_NxS):
      batches = _split_batches(x_NxS, self.eval_batch_size)
      logits = jax.lax.map(
          lambda xb: self.network.apply(member.params, member.model_state, xb, train=False)[0],
          batches)
      return logits.reshape(-1, logits.shape[-1])[:x_NxS.shape[0]]

    out = []
    for x, y in ((probes.x_train, probes.y_train), (probes.x_test, probes.y_test)):
      logits_NxC = predict(x)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits_NxC, y).mean()
      accuracy = (logits_NxC.argmax(-1) == y).mean()
      out.append((jax.nn.softmax(logits_NxC), loss, accuracy))
    return out

  # -- cohort ----------------------------------------------------------------

  def init(self, hp: MemberHparams) -> CohortState:
    """Initial state of all members (pure; jit it)."""
    return CohortState(step=jnp.zeros((), jnp.int32), members=jax.vmap(self._init_member)(hp),
                       alive=hp.real, diverged_at=jnp.full(hp.real.shape, -1, jnp.int32))

  @staticmethod
  def _orders(keys, stream: int, epoch, size: int):
    """(E, size) each member's permutation of ``range(size)`` for ``epoch``, from ``stream``."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, stream)
    return jax.vmap(data_lib.epoch_permutation, in_axes=(0, None, None))(keys, epoch, size)

  def _permutations(self, hp: MemberHparams, epoch):
    return self._orders(hp.key, DATA_STREAM, epoch, self.info.num_train)

  def train(self, state: CohortState, hp: MemberHparams, dataset: data_lib.Dataset,
            num_steps) -> CohortState:
    """Advances every member by ``num_steps`` steps (pure; jit it).

    ``num_steps`` is traced: chunks of any length between recording points share
    one compiled program (``fori_loop`` with a traced bound lowers to the same
    XLA while loop as ``lax.scan``, without stacking per-step outputs).
    """
    step_members = jax.vmap(self._member_step, in_axes=(None, 0, 0, 0, 0, None))
    return self._state_in_blocks(
        lambda state, hp: self._loop(state, num_steps, lambda e: self._permutations(hp, e),
                                     lambda members, alive, perms, step: step_members(
                                         dataset, hp, members, alive, perms, step)),
        state, hp, state.step + num_steps)

  def _in_blocks(self, fn: Callable[..., object], *trees):
    """``fn(*trees)`` over blocks of at most ``member_block`` members, one block after another.

    Every leaf of ``trees`` and of ``fn``'s result has the member axis first. The members split
    into the fewest blocks of at most ``member_block``, all of one size; the last block is
    filled up with copies of the last member (computed, then dropped).
    """
    size = jax.tree.leaves(trees)[0].shape[0]
    if not self.member_block or size <= self.member_block:
      return fn(*trees)
    num_blocks = -(-size // self.member_block)
    block = -(-size // num_blocks)
    fill = num_blocks * block - size

    def split(x):
      x = jnp.concatenate([x, jnp.repeat(x[-1:], fill, axis=0)]) if fill else x
      return x.reshape(num_blocks, block, *x.shape[1:])

    out = jax.lax.map(lambda block_trees: fn(*block_trees), jax.tree.map(split, trees))
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:])[:size], out)

  def _state_in_blocks(self, run: Callable[[CohortState, MemberHparams], CohortState],
                       state: CohortState, hp: MemberHparams, step) -> CohortState:
    """``run(state, hp)`` in member blocks (``_in_blocks``); the result is at ``step``."""
    def on_members(members, alive, diverged_at, hp):
      out = run(state.replace(members=members, alive=alive, diverged_at=diverged_at), hp)
      return out.members, out.alive, out.diverged_at

    members, alive, diverged_at = self._in_blocks(
        on_members, state.members, state.alive, state.diverged_at, hp)
    return CohortState(step=step, members=members, alive=alive, diverged_at=diverged_at)

  def _loop(self, state: CohortState, num_steps, permutations, step_members) -> CohortState:
    """``num_steps`` lockstep steps; a new data order (``permutations(epoch)``) per epoch."""

    def body(_, carry):
      state, perms = carry
      epoch, within = jnp.divmod(state.step, self.steps_per_epoch)
      # The same predicate for every member (lockstep): a real branch, not a select.
      perms = jax.lax.cond(within == 0, lambda: permutations(epoch), lambda: perms)
      members, ok = step_members(state.members, state.alive, perms, state.step)
      newly_diverged = state.alive & ~ok
      return state.replace(
          step=state.step + 1, members=members, alive=ok,
          diverged_at=jnp.where(newly_diverged, state.step, state.diverged_at)), perms

    # A chunk that starts mid-epoch needs that epoch's order now; one that starts at an epoch
    # boundary (most chunks) gets it from the first step's branch: computed once, not twice.
    epoch, within = jnp.divmod(state.step, self.steps_per_epoch)
    placeholder = jax.eval_shape(permutations, epoch)
    perms = jax.lax.cond(within == 0,
                         lambda: jnp.zeros(placeholder.shape, placeholder.dtype),
                         lambda: permutations(epoch))
    state, _ = jax.lax.fori_loop(0, num_steps, body, (state, perms))
    return state

  def pretrain(self, state: CohortState, hp: MemberHparams,
               dataset: data_lib.Dataset) -> CohortState:
    """Pretrains a fresh state for ``init`` != 'default' (pure; jit it); step stays 0.

    A member that diverges while pretraining is flagged as diverged at step 0.
    """
    return self._state_in_blocks(lambda state, hp: self._pretrain(state, hp, dataset),
                                 state, hp, jnp.zeros_like(state.step))

  def _pretrain(self, state: CohortState, hp: MemberHparams,
                dataset: data_lib.Dataset) -> CohortState:
    pre_hp = hp.replace(key=jax.vmap(jax.random.fold_in, in_axes=(0, None))(
        hp.key, PRETRAIN_STREAM))
    n = self.info.num_train
    # Which labels are swapped ('random_labels') or which examples are kept ('subset').
    chosen_ExN = self._orders(pre_hp.key, CHOICE_STREAM, 0, n)
    labels_ExN = None
    if self.init_choice == 'random_labels':
      labels_ExN = jnp.take(dataset.y_train, chosen_ExN)
      permutations = lambda epoch: self._permutations(pre_hp, epoch)
    elif self.init_choice == 'subset':
      subset_ExK = chosen_ExN[:, :self.subset_size]
      passes = -(-n // self.subset_size)

      def permutations(epoch):  # Passes over the subset, each in a new order, filling an epoch.
        order_ExPxK = jax.vmap(
            lambda p: self._orders(pre_hp.key, DATA_STREAM, epoch * passes + p,
                                   self.subset_size), out_axes=1)(jnp.arange(passes))
        order_ExN = order_ExPxK.reshape(len(subset_ExK), -1)[:, :n]
        return jnp.take_along_axis(subset_ExK, order_ExN, axis=1)
    else:
      raise ValueError(f'init {self.init_choice!r} has no pretraining; '
                       'accepted: random_labels, subset.')

    step_members = jax.vmap(
        functools.partial(self._member_step, scheduled=False),
        in_axes=(None, 0, 0, 0, 0, None, None if labels_ExN is None else 0))
    state = self._loop(state, self.pretrain_steps, permutations,
                       lambda members, alive, perms, step: step_members(
                           dataset, pre_hp, members, alive, perms, step, labels_ExN))
    members = state.members.replace(
        opt_state=jax.vmap(self._fresh_optimizer_state)(hp, state.members.params))
    return state.replace(step=jnp.zeros_like(state.step), members=members,
                         diverged_at=jnp.where(state.diverged_at >= 0, 0, -1))

  def evaluate(self, state: CohortState, probes: Probes) -> Evaluation:
    """Eval-mode probabilities and metrics on the probes (pure; jit it).

    Members that diverged get NaN probabilities and metrics, never stale copies.
    """
    return self._in_blocks(lambda members, alive: self._evaluate(members, alive, probes),
                           state.members, state.alive)

  def _evaluate(self, members: MemberState, alive: jax.Array, probes: Probes) -> Evaluation:
    (tp, tl, ta), (sp, sl, sa) = jax.vmap(self._member_eval, in_axes=(None, 0))(
        probes, members)
    invalid = lambda x: jnp.where(alive.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.nan)
    return Evaluation(train_probs=invalid(tp), test_probs=invalid(sp),
                      train_loss=invalid(tl), train_accuracy=invalid(ta),
                      test_loss=invalid(sl), test_accuracy=invalid(sa))

  def compile(self, hp: MemberHparams, dataset: data_lib.Dataset, probes: Probes,
              mesh: jax.sharding.Mesh, fresh: bool = True) -> CompiledCohort:
    """Compiles init, train and evaluate ahead of time, members sharded over ``mesh``.

    Args:
      hp: the members' hparams, member count a multiple of ``mesh.size``.
      dataset: the dataset (replicated on every device).
      probes: the probe sets (replicated).
      mesh: a 1-D mesh (``devices.member_mesh``).
      fresh: the cohort starts from init (False: it resumes, so pretraining is not compiled).

    Returns:
      A ``CompiledCohort``; call its functions with arrays placed by ``place``.
    """
    hp_sharding = devices.member_shardings(hp, mesh)
    abstract = jax.eval_shape(self.init, hp)
    state_sharding = devices.member_shardings(abstract, mesh)
    eval_sharding = devices.member_shardings(jax.eval_shape(self.evaluate, abstract, probes), mesh)
    rep = devices.replicated(mesh)
    spec = lambda shardings: jax.tree.map(lambda s: s.spec, shardings)  # noqa: E731
    # Training and evaluation run on each device's own members (``shard_map``): their loops
    # over member blocks are per device, and nothing in them crosses devices (so no
    # replication checks: the convolutions' custom VJPs do not track them).
    on_each_device = functools.partial(
        jax.shard_map, mesh=mesh, out_specs=spec(state_sharding), check_vma=False,
        in_specs=(spec(state_sharding), spec(hp_sharding), spec(rep), spec(rep)))
    started = time.perf_counter()
    init = jax.jit(self.init, in_shardings=(hp_sharding,), out_shardings=state_sharding)
    train = jax.jit(on_each_device(self.train),
                    in_shardings=(state_sharding, hp_sharding, rep, rep),
                    out_shardings=state_sharding, donate_argnums=0)
    evaluate = jax.jit(on_each_device(self.evaluate, in_specs=spec((state_sharding, rep)),
                                      out_specs=spec(eval_sharding)),
                       in_shardings=(state_sharding, rep),
                       out_shardings=eval_sharding)
    pretrain = None
    if self.pretrain_steps and fresh:
      pretrain = jax.jit(on_each_device(self.pretrain, in_specs=spec(
                             (state_sharding, hp_sharding, rep))),
                         in_shardings=(state_sharding, hp_sharding, rep),
                         out_shardings=state_sharding, donate_argnums=0
                         ).lower(abstract, hp, dataset).compile()
    compiled = CompiledCohort(
        init=init.lower(hp).compile(
            _INIT_COMPILER_OPTIONS if jax.default_backend() == 'cpu' else None),
        train=train.lower(abstract, hp, dataset, 0).compile(),
        evaluate=evaluate.lower(abstract, probes).compile(),
        pretrain=pretrain,
        abstract_state=jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract, state_sharding),
        compile_seconds=time.perf_counter() - started)
    return compiled


class CompiledCohort(NamedTuple):
  """A cohort's ahead-of-time compiled functions (one compile each, any chunk length)."""
  init: Callable[[MemberHparams], CohortState]
  train: Callable[[CohortState, MemberHparams, data_lib.Dataset, int], CohortState]
  evaluate: Callable[[CohortState, Probes], Evaluation]
  # Moves a fresh state to step 0 of a pretrained init; None for init 'default' or on resume.
  pretrain: Callable[[CohortState, MemberHparams, data_lib.Dataset], CohortState] | None
  abstract_state: CohortState  # ShapeDtypeStructs with shardings: the restore target
  compile_seconds: float


def _split_batches(x, batch_size: int):
  """(N, ...) → (k, ceil(N / k), ...) with k = ceil(N / batch_size), zero-padded at the end.

  Batches of equal size at most ``batch_size``, padded by fewer than k rows: 1,438 probes at
  1,024 are 2 x 719, not 2 x 1,024 (which evaluated 42% padding).
  """
  n = x.shape[0]
  num_batches = -(-n // batch_size)
  b = -(-n // num_batches)
  pad = num_batches * b - n
  x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
  return x.reshape((num_batches, b) + x.shape[1:])
