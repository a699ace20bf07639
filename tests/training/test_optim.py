"""Tests of ensembles.training.optim: schedules against their closed forms, and two updates of
every optimizer family against the same updates written out in float64 NumPy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ensembles.training import optim

# Adam's defaults in optax (the optimizer sets only b1): b2, eps.
ADAM_B2, ADAM_EPS = 0.999, 1e-8


def _multiplier(kind: str, step: int, total: int, warmup: int) -> float:
  return float(optim.schedule_multiplier(jnp.int32(optim.SCHEDULES.index(kind)),
                                         jnp.int32(step), total, warmup))


def _cosine(step: int, total: int) -> float:
  """Cosine decay from 1 at step 0 to 0 at ``total``, flat after."""
  return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


@pytest.mark.parametrize('step', [0, 1, 25, 50, 99, 100, 130])
def test_constant_and_cosine_schedules_match_their_closed_forms(step):
  assert _multiplier('constant', step, 100, 10) == 1.0
  np.testing.assert_allclose(_multiplier('cosine', step, 100, 10), _cosine(step, 100),
                             rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('step', [0, 1, 5, 10, 11, 55, 100])
def test_warmup_cosine_is_linear_then_a_cosine_over_the_rest(step):
  total, warmup = 100, 10
  expected = (step / warmup if step < warmup
              else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))))
  np.testing.assert_allclose(_multiplier('warmup_cosine', step, total, warmup), expected,
                             rtol=1e-6, atol=1e-7)


def test_warmup_is_kept_within_one_step_and_the_run():
  # 0 warmup steps count as 1 (the multiplier is 0 at step 0, 1 at step 1); a warmup as long
  # as the run is cut to total - 1 steps, so the cosine part is never empty.
  assert _multiplier('warmup_cosine', 0, 10, 0) == 0.0
  np.testing.assert_allclose(_multiplier('warmup_cosine', 1, 10, 0), 1.0, rtol=1e-6)
  np.testing.assert_allclose(_multiplier('warmup_cosine', 4, 10, 50), 4 / 9, rtol=1e-6)
  np.testing.assert_allclose(_multiplier('warmup_cosine', 9, 10, 50), 1.0, rtol=1e-6)


def test_schedule_kind_is_chosen_per_member_under_vmap():
  """Members of one cohort carry their own (traced) schedule kind."""
  kinds = jnp.arange(len(optim.SCHEDULES))
  values = jax.jit(jax.vmap(lambda k: optim.schedule_multiplier(k, jnp.int32(30), 100, 10)))(
      kinds)
  assert values.dtype == jnp.float32
  np.testing.assert_allclose(
      values, [1.0, _cosine(30, 100), 0.5 * (1 + math.cos(math.pi * 20 / 90))], rtol=1e-6)


PARAMS = dict(kernel=np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]),
              bias=np.array([0.1, -0.2, 0.3]))
GRADS = [dict(kernel=np.array([[0.2, -0.1, 0.4], [-0.3, 0.05, 0.6]]),
              bias=np.array([0.5, -0.25, 0.125])),
         dict(kernel=np.array([[-0.1, 0.3, 0.2], [0.1, -0.4, 0.05]]),
              bias=np.array([-0.2, 0.1, 0.3]))]


def _numpy_updates(optimizer: str, lr: float, momentum: float, wd: float) -> list[dict]:
  """The updates of two steps, written out in float64 (weight decay on kernels only)."""
  params = {k: v.copy() for k, v in PARAMS.items()}
  trace = {k: np.zeros_like(v) for k, v in params.items()}
  mu = {k: np.zeros_like(v) for k, v in params.items()}
  nu = {k: np.zeros_like(v) for k, v in params.items()}
  updates = []
  for t, grads in enumerate(GRADS, start=1):
    update = {}
    for k in params:
      decay = wd if params[k].ndim >= 2 else 0.0
      g = grads[k] + (decay * params[k] if optimizer != 'adamw' else 0.0)
      if optimizer in ('sgd', 'nesterov'):
        trace[k] = g + momentum * trace[k]
        direction = g + momentum * trace[k] if optimizer == 'nesterov' else trace[k]
        update[k] = -lr * direction
      else:
        mu[k] = momentum * mu[k] + (1 - momentum) * g
        nu[k] = ADAM_B2 * nu[k] + (1 - ADAM_B2) * g**2
        adam = (mu[k] / (1 - momentum**t)) / (np.sqrt(nu[k] / (1 - ADAM_B2**t)) + ADAM_EPS)
        if optimizer == 'adamw':
          adam = adam + decay * params[k]
        update[k] = -lr * adam
      params[k] = params[k] + update[k]
    updates.append(update)
  return updates


@pytest.mark.parametrize('optimizer', ['sgd', 'nesterov', 'adam', 'adamw'])
def test_two_updates_match_numpy(optimizer):
  lr, momentum, wd = 0.1, 0.9, 0.01
  tx = optim.make_optimizer(optimizer, lr, momentum, wd)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), PARAMS)
  state = tx.init(params)
  for t, (grads, expected) in enumerate(zip(GRADS, _numpy_updates(optimizer, lr, momentum, wd))):
    grads = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads)
    updates, state = tx.update(grads, state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    for k in PARAMS:
      np.testing.assert_allclose(updates[k], expected[k], rtol=2e-5, atol=1e-7,
                                 err_msg=f'{optimizer} step {t + 1} {k}')


def test_with_learning_rate_rescales_the_next_update():
  tx = optim.make_optimizer('sgd', 0.1, 0.0, 0.0)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), PARAMS)
  grads = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), GRADS[0])
  state = optim.with_learning_rate(tx.init(params), 0.025)
  updates, state = tx.update(grads, state, params)
  for k in PARAMS:
    np.testing.assert_allclose(updates[k], -0.025 * GRADS[0][k], rtol=1e-6)
  np.testing.assert_allclose(state.hyperparams['learning_rate'], 0.025)


def test_unknown_optimizer_is_refused_naming_the_accepted_ones():
  with pytest.raises(ValueError, match=r"optimizer 'rmsprop': accepted \('sgd', 'nesterov', "
                                       r"'adam', 'adamw'\)"):
    optim.make_optimizer('rmsprop', 0.1, 0.9, 0.0)
