"""Optimizers and learning-rate schedules with per-member (traced) hyperparameters.

The optimizer family (``sgd``, ``nesterov``, ``adam``, ``adamw``) is static per
cohort; learning rate, momentum and weight decay live in the optimizer state
through ``optax.inject_hyperparams`` so that every member of a cohort carries
its own values without recompiling. The schedule *kind* is per member too: all
kinds are evaluated (a few scalar ops) and the member's own is selected.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ('sgd', 'nesterov', 'adam', 'adamw')
SCHEDULES = ('constant', 'cosine', 'warmup_cosine')



def _is_kernel(params):
  """Weight decay mask: kernels (ndim >= 2) only, not biases or norm scales."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def _factory(optimizer: str):
  """An optax factory of (learning_rate, momentum, weight_decay) for a family."""

  def make(learning_rate, momentum, weight_decay):
    if optimizer == 'adamw':
      return optax.adamw(learning_rate, b1=momentum, weight_decay=weight_decay,
                         mask=_is_kernel)
    if optimizer == 'adam':
      core = optax.adam(learning_rate, b1=momentum)
    else:
      core = optax.sgd(learning_rate, momentum=momentum, nesterov=optimizer == 'nesterov')
    return optax.chain(optax.add_decayed_weights(weight_decay, mask=_is_kernel), core)

  return make


def make_optimizer(optimizer: str, learning_rate, momentum, weight_decay):
  """The optimizer of one member; hyperparameters may be traced scalars.

  Args:
    optimizer: one of ``OPTIMIZERS`` (static).
    learning_rate: the peak learning rate; the schedule rescales it each step
      through ``with_learning_rate``.
    momentum: SGD momentum, or Adam's ``b1``.
    weight_decay: L2 coefficient on kernels (decoupled for ``adamw``).

  Returns:
    An ``optax.inject_hyperparams`` transformation.
  """
  if optimizer not in OPTIMIZERS:
    raise ValueError(f'optimizer {optimizer!r}: accepted {OPTIMIZERS}.')
  return optax.inject_hyperparams(_factory(optimizer))(
      learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay)


def with_learning_rate(opt_state, learning_rate):
  """A copy of an injected optimizer state with a new learning rate."""
  hyperparams = dict(opt_state.hyperparams, learning_rate=learning_rate)
  return opt_state._replace(hyperparams=hyperparams)


def schedule_multiplier(schedule_id, step, total_steps: int, warmup_steps: int):
  """Learning-rate multiplier in [0, 1] at ``step`` for schedule kind ``schedule_id``.

  Args:
    schedule_id: index into ``SCHEDULES`` (traced int).
    step: the step (traced int).
    total_steps: training length in steps (static).
    warmup_steps: linear warmup length of 'warmup_cosine' (static).

  Returns:
    A float32 scalar.
  """
  # Every kind is evaluated, so keep each valid even where a member does not use it.
  warmup_steps = min(max(warmup_steps, 1), total_steps - 1)
  schedules = {
      'constant': optax.constant_schedule(1.0),
      'cosine': optax.cosine_decay_schedule(1.0, decay_steps=total_steps),
      'warmup_cosine': optax.warmup_cosine_decay_schedule(
          init_value=0.0, peak_value=1.0, warmup_steps=warmup_steps,
          decay_steps=total_steps),
  }
  values = jnp.stack([schedules[name](step) for name in SCHEDULES])
  return values[schedule_id].astype(jnp.float32)
