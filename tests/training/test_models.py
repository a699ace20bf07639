"""Tests of ensembles.training.models: every family on every supported input shape, vmap over
members, init_scale, BatchNorm modes, FLOP counts against hand-computed closed forms, config
errors, and every convolution formulation (forward and gradients under vmap) against a NumPy
reference.

Speed: each (arch, input shape) compiles one function that does everything the per-case tests
check, cached across tests; compiles use XLA backend optimisation level 0, which cuts CPU compile
time 3-6x (a WRN-10-1 init: 9 s -> 1.6 s) and does not change what is computed.
"""

import functools
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ensembles.training.models import ARCHS, CONV_FORMULATIONS, ModelConfig, Network, build_network
from ensembles.training.models import conv as conv_lib

# XLA options for test compiles (see the module docstring).
_FAST_COMPILE_OPTIONS = {
  'xla_backend_optimization_level': 0,
  'xla_llvm_disable_expensive_passes': True,
}
_NUM_CLASSES = 10
_BATCH = 4
_NUM_MEMBERS = 4
_IMAGE_SHAPES = ((8, 8, 1), (28, 28, 1), (32, 32, 3))
_SIGNAL_SHAPE = (40, 1)
# Small configs, one per family: widths 8-16 (resnet: widen factor 1 = 16/32/64 channels).
_CONFIGS = {
  'mlp': ModelConfig('mlp', width=16, depth=2),
  'cnn': ModelConfig('cnn', width=8, depth=1),
  'resnet': ModelConfig('resnet', width=1, depth=10),
  'vit': ModelConfig('vit', width=16, depth=1, num_heads=4, patch_size=4),
  'convmixer': ModelConfig('convmixer', width=8, depth=1, patch_size=2, kernel_size=3),
  'mlp_no_norm': ModelConfig('mlp', width=16, depth=2, norm=False),
  'cnn_no_norm': ModelConfig('cnn', width=8, depth=1, norm=False),
}
_USES_BATCH_NORM = {'mlp', 'cnn', 'resnet', 'convmixer'}
_FAMILIES = ('mlp', 'cnn', 'resnet', 'vit', 'convmixer')
_CASES = [
  pytest.param(name, shape, id=f"{name}-{'x'.join(map(str, shape))}")
  for name, shape in (
    [(name, shape) for name in _FAMILIES for shape in _IMAGE_SHAPES]
    + [('mlp', _SIGNAL_SHAPE), ('cnn', _SIGNAL_SHAPE)]
    + [('mlp_no_norm', (8, 8, 1)), ('cnn_no_norm', _SIGNAL_SHAPE)]
  )
]
# Parameters init_scale multiplies (kernels of Dense / Conv / attention, ViT positions) and
# those it leaves alone (biases, including MultiHeadDotProductAttention's 2-D ones; norm scales).
_SCALED_PARAM_NAMES = {'kernel', 'pos_embedding'}
_UNSCALED_PARAM_NAMES = {'bias', 'scale'}
# Independently initialised members: their logits on one batch differ by more than this.
_DISTINCT_MEMBERS_MIN_GAP = 1e-3
# vmapped member vs the same member alone: same math, batched convolutions reorder sums.
_VMAP_TOLERANCE = dict(rtol=1e-4, atol=1e-5)
# Logits of the same math traced differently (one example alone vs in a batch, vmapped or not):
# only the summation order differs.
_REORDER_ATOL = 1e-5


def _compile(fn, *args):
  """Compiles ``fn`` for ``args`` with the fast test options and returns the executable."""
  return jax.jit(fn).lower(*args).compile(_FAST_COMPILE_OPTIONS)


def _network(name: str, input_shape: tuple[int, ...]) -> Network:
  return build_network(_CONFIGS[name], input_shape, _NUM_CLASSES)


def _inputs(input_shape: tuple[int, ...], seed: int) -> np.ndarray:
  # NumPy, not jax.random: an eager jax.random.normal compiles a sampler per shape (~0.4 s).
  rng = np.random.default_rng(seed)
  return rng.standard_normal((_BATCH, *input_shape)).astype(np.float32)


@functools.cache
def _single_member_run(name: str, input_shape: tuple[int, ...]) -> dict:
  """Init, one train step's forward, eval on the batch and on each example alone (numpy)."""
  network = _network(name, input_shape)

  def run(key, x_BxS, other_BxS):
    params, state0 = network.init(key)
    # Same first example, different rest of the batch: train-mode BN must notice. The two
    # batches share one traced copy of the network (vmap) to keep the compile small.
    x_mixed_BxS = other_BxS.at[0].set(x_BxS[0])
    train = jax.vmap(lambda x: network.apply(params, state0, x, train=True))
    logits_train_2xBxC, state1_2 = train(jnp.stack([x_BxS, x_mixed_BxS]))
    state1 = jax.tree.map(lambda leaf: leaf[0], state1_2)
    logits_eval_BxC, state2 = network.apply(params, state1, x_BxS, train=False)

    def alone(x_S):
      logits_1xC, _ = network.apply(params, state1, x_S[None], train=False)
      return logits_1xC[0]

    return dict(
      state0=state0,
      state1=state1,
      state2=state2,
      logits_train_BxC=logits_train_2xBxC[0],
      logits_mixed_BxC=logits_train_2xBxC[1],
      logits_eval_BxC=logits_eval_BxC,
      logits_alone_BxC=jax.vmap(alone)(x_BxS),
    )

  args = (_member_keys()[0], _inputs(input_shape, 1), _inputs(input_shape, 2))
  return jax.tree.map(np.asarray, _compile(run, *args)(*args))


def _member_keys() -> jax.Array:
  """Keys of the vmapped members; member 0's is also the single-member runs' key."""
  return jax.random.split(jax.random.key(0), _NUM_MEMBERS)


@functools.cache
def _ensemble_executable(name: str):
  """Compiled vmapped (init + train forward + eval forward) over members, on 8x8x1 inputs."""
  network = _network(name, (8, 8, 1))

  def members(keys_E, scales_E, x_BxS):
    params_E, state0_E = jax.vmap(network.init)(keys_E, scales_E)
    forward = jax.vmap(network.apply, in_axes=(0, 0, None, None))
    logits_train_ExBxC, state1_E = forward(params_E, state0_E, x_BxS, True)
    logits_eval_ExBxC, _ = forward(params_E, state1_E, x_BxS, False)
    return params_E, state0_E, state1_E, logits_train_ExBxC, logits_eval_ExBxC

  args = (_member_keys(), jnp.ones(_NUM_MEMBERS), _inputs((8, 8, 1), 1))
  return _compile(members, *args)


def _leaves_with_paths(tree) -> list[tuple[str, np.ndarray]]:
  return [(jax.tree_util.keystr(path), np.asarray(leaf)) for path, leaf in
      jax.tree_util.tree_leaves_with_path(tree)]


@pytest.mark.parametrize('name, input_shape', _CASES)
def test_forward_shapes_and_finite(name, input_shape):
  run = _single_member_run(name, input_shape)
  for key in ('logits_train_BxC', 'logits_eval_BxC'):
    assert run[key].shape == (_BATCH, _NUM_CLASSES), key
    assert np.isfinite(run[key]).all(), key
  # Logits must depend on the input at all.
  assert np.ptp(run['logits_eval_BxC'], axis=0).max() > 0


@pytest.mark.parametrize('name, input_shape', _CASES)
def test_batch_stats_change_in_train_only(name, input_shape):
  run = _single_member_run(name, input_shape)
  if name not in _USES_BATCH_NORM:
    assert run['state0'] == {} and run['state1'] == {}
    np.testing.assert_allclose(
      run['logits_train_BxC'], run['logits_eval_BxC'], atol=_REORDER_ATOL
    )
    return
  assert set(run['state0']) == {'batch_stats'}
  before = _leaves_with_paths(run['state0'])
  after_train = _leaves_with_paths(run['state1'])
  after_eval = _leaves_with_paths(run['state2'])
  assert before, 'a BatchNorm network must have running statistics'
  for (path, old), (_, new) in zip(before, after_train, strict=True):
    assert np.any(old != new), f'train mode did not update {path}'
  for (path, old), (_, new) in zip(after_train, after_eval, strict=True):
    np.testing.assert_array_equal(old, new, err_msg=f'eval mode changed {path}')


@pytest.mark.parametrize('name, input_shape', _CASES)
def test_eval_output_is_independent_of_the_batch(name, input_shape):
  run = _single_member_run(name, input_shape)
  np.testing.assert_allclose(
    run['logits_alone_BxC'], run['logits_eval_BxC'], atol=_REORDER_ATOL
  )
  # Control: in train mode BatchNorm uses the batch, so example 0 sees the rest of its batch.
  changed = np.abs(run['logits_mixed_BxC'][0] - run['logits_train_BxC'][0]).max()
  if name in _USES_BATCH_NORM:
    assert changed > _REORDER_ATOL
  else:
    assert changed <= _REORDER_ATOL


@pytest.mark.parametrize('name', _FAMILIES)
def test_vmap_over_members_gives_distinct_members_each_as_if_alone(name):
  members = _ensemble_executable(name)
  _, _, state1_E, train_ExBxC, eval_ExBxC = jax.tree.map(
      np.asarray, members(_member_keys(), jnp.ones(_NUM_MEMBERS), _inputs((8, 8, 1), 1))
  )
  for logits_ExBxC in (train_ExBxC, eval_ExBxC):
    assert logits_ExBxC.shape == (_NUM_MEMBERS, _BATCH, _NUM_CLASSES)
    for i in range(_NUM_MEMBERS):
      for j in range(i):
        gap = np.abs(logits_ExBxC[i] - logits_ExBxC[j]).max()
        assert gap > _DISTINCT_MEMBERS_MIN_GAP, (i, j)
  # Member 0 (same key, same batch) must match the unvmapped run: its init does not depend on
  # the other members, and its BatchNorm statistics are its own, not pooled over members.
  alone = _single_member_run(name, (8, 8, 1))
  np.testing.assert_allclose(train_ExBxC[0], alone['logits_train_BxC'], **_VMAP_TOLERANCE)
  np.testing.assert_allclose(eval_ExBxC[0], alone['logits_eval_BxC'], **_VMAP_TOLERANCE)
  chex.assert_trees_all_close(
      jax.tree.map(lambda leaf: leaf[0], state1_E), alone['state1'], **_VMAP_TOLERANCE
  )


@pytest.mark.parametrize('name', _FAMILIES)
def test_init_scale_multiplies_every_kernel_as_traced_value(name):
  members = _ensemble_executable(name)
  scales_E = np.array([1.0, 0.5, 2.0, 0.0], np.float32)
  same_keys_E = jnp.stack([jax.random.key(7)] * _NUM_MEMBERS)
  params_E, state0_E, *_ = members(same_keys_E, jnp.asarray(scales_E), _inputs((8, 8, 1), 1))
  num_scaled = 0
  for path, leaf_E in _leaves_with_paths(params_E):
    reference = leaf_E[0]
    leaf_name = path.split("'")[-2]
    if leaf_name in _SCALED_PARAM_NAMES:
      assert reference.ndim >= 2 and np.abs(reference).max() > 0, path
      num_scaled += 1
      expected_E = scales_E.reshape(-1, *[1] * reference.ndim) * reference
    else:
      assert leaf_name in _UNSCALED_PARAM_NAMES, f'unexpected parameter {path}'
      expected_E = np.broadcast_to(reference, leaf_E.shape)
    np.testing.assert_allclose(leaf_E, expected_E, rtol=1e-6, err_msg=path)
  assert num_scaled >= 2
  for path, leaf_E in _leaves_with_paths(state0_E):
    np.testing.assert_array_equal(leaf_E, np.broadcast_to(leaf_E[0], leaf_E.shape), path)


def test_init_scale_as_python_float_halves_kernels():
  network = _network('mlp', (8, 8, 1))
  key = jax.random.key(3)
  init_both = _compile(lambda k: (network.init(k, 1.0)[0], network.init(k, 0.5)[0]), key)
  params_1, params_half = jax.tree.map(np.asarray, init_both(key))
  for layer in ('Dense_0', 'Dense_1', 'Dense_2'):
    np.testing.assert_array_equal(params_half[layer]['kernel'], 0.5 * params_1[layer]['kernel'])
  np.testing.assert_array_equal(params_half['Dense_2']['bias'], params_1['Dense_2']['bias'])
  for layer in ('BatchNorm_0', 'BatchNorm_1'):
    chex.assert_trees_all_equal(params_half[layer], params_1[layer])


@pytest.mark.parametrize('norm', [True, False])
@pytest.mark.parametrize('input_shape', [(8, 8, 1), _SIGNAL_SHAPE])
def test_mlp_flops_closed_form(norm, input_shape):
  width, depth = 16, 3
  network = build_network(ModelConfig('mlp', width, depth, norm=norm), input_shape, _NUM_CLASSES)
  fans = [math.prod(input_shape)] + [width] * depth + [_NUM_CLASSES]
  expected = 2 * sum(fan_in * fan_out for fan_in, fan_out in zip(fans[:-1], fans[1:]))
  assert network.flops_per_example() == expected


def _conv_flops(out_positions: int, kernel_area: int, fan_in: int, fan_out: int) -> int:
  return 2 * out_positions * kernel_area * fan_in * fan_out


@pytest.mark.parametrize(
  'input_shape, expected',
  [
    # 8x8x1, width 8, one block: 3x3 convs 1->8, 8->8 at 8x8, strided 8->8 to 4x4; head 3x3
    # 8->8 and 1x1 8->8 at 4x4, 1x1 8->10 at 4x4.
    ((8, 8, 1), _conv_flops(64, 9, 1, 8) + _conv_flops(64, 9, 8, 8)
     + 2 * _conv_flops(16, 9, 8, 8) + _conv_flops(16, 1, 8, 8) + _conv_flops(16, 1, 8, 10)),
    # 40x1 signal: kernels of 3, 40 positions, strided to 20.
    ((40, 1), _conv_flops(40, 3, 1, 8) + _conv_flops(40, 3, 8, 8)
     + 2 * _conv_flops(20, 3, 8, 8) + _conv_flops(20, 1, 8, 8) + _conv_flops(20, 1, 8, 10)),
  ],
)
def test_cnn_flops_closed_form(input_shape, expected):
  assert _network('cnn', input_shape).flops_per_example() == expected


def test_convmixer_and_vit_flops_closed_form():
  # ConvMixer dim 8, patch 2, kernel 3 on 8x8x1: 16 patches of 4 values; depthwise conv sums
  # 9 products per output (not 9 x 8, as a dense conv would).
  positions, dim = 16, 8
  expected_convmixer = (
    _conv_flops(positions, 1, 4, dim)
    + 2 * positions * 9 * dim
    + _conv_flops(positions, 1, dim, dim)
    + 2 * dim * _NUM_CLASSES
  )
  assert _network('convmixer', (8, 8, 1)).flops_per_example() == expected_convmixer
  # ViT dim 16, patch 4 on 8x8x1: 4 tokens of 16 values; q, k, v, out projections; scores and
  # weighted values (2 x N x N x D each); MLP D -> 4D -> D; head D -> C.
  tokens, dim = 4, 16
  expected_vit = (
    2 * tokens * 16 * dim
    + 4 * 2 * tokens * dim * dim
    + 2 * (2 * tokens * tokens * dim)
    + 2 * (2 * tokens * dim * 4 * dim)
    + 2 * dim * _NUM_CLASSES
  )
  assert _network('vit', (8, 8, 1)).flops_per_example() == expected_vit


def test_archs_registry_and_unknown_name():
  assert ARCHS == ('mlp', 'cnn', 'resnet', 'vit', 'convmixer')
  with pytest.raises(ValueError, match="arch='transformer'") as error:
    ModelConfig('transformer', width=8, depth=1)
  for arch in ARCHS:
    assert arch in str(error.value)


@pytest.mark.parametrize(
  'arch, options, input_shape, match',
  [
    ('vit', dict(patch_size=3), (8, 8, 1), r"patch_size=3 .*accepted: \[1, 2, 4, 8\]"),
    ('convmixer', dict(patch_size=3), (28, 28, 1), r'patch_size=3 .*accepted'),
    ('resnet', dict(width=1, depth=12), (8, 8, 1), r"depth=12 .*6n \+ 4"),
    ('resnet', dict(width=1, depth=4), (8, 8, 1), r'depth=4 .*n >= 1'),
    ('vit', dict(num_heads=3), (8, 8, 1), r'num_heads=3 .*divisor of width'),
    ('vit', {}, _SIGNAL_SHAPE, r"input_shape=\(40, 1\) .*'vit'.*mlp, cnn"),
    ('resnet', dict(width=1, depth=10), _SIGNAL_SHAPE, r"input_shape=\(40, 1\) .*'resnet'"),
    ('convmixer', {}, _SIGNAL_SHAPE, r"input_shape=\(40, 1\) .*'convmixer'"),
    ('cnn', {}, (2, 8, 8, 1), r"input_shape=\(2, 8, 8, 1\) .*\(L, F\) signals"),
    ('cnn', {}, (8, 0, 1), r"input_shape\[1\]=0"),
    ('mlp', dict(width=0), (8, 8, 1), r'width=0'),
    ('mlp', dict(depth=0), (8, 8, 1), r'depth=0'),
    ('mlp', dict(width=2.5), (8, 8, 1), r'width=2.5'),
    ('mlp', dict(norm='yes'), (8, 8, 1), r"norm='yes'"),
    ('convmixer', dict(kernel_size=0), (8, 8, 1), r'kernel_size=0'),
  ],
)
def test_invalid_options_raise_at_build_time(arch, options, input_shape, match):
  def build():
    config = ModelConfig(arch, **{'width': 16, 'depth': 1, **options})
    return build_network(config, input_shape, _NUM_CLASSES)

  with pytest.raises(ValueError, match=match):
    build()


def test_invalid_num_classes_and_apply_inputs():
  with pytest.raises(ValueError, match='num_classes=1'):
    build_network(_CONFIGS['mlp'], (8, 8, 1), 1)
  network = _network('mlp', (8, 8, 1))
  # Shapes suffice: both checks fire before any parameter is read.
  params, state = jax.eval_shape(network.init, jax.random.key(0))
  with pytest.raises(ValueError, match=r"shape \(4, 8, 8\).*\(batch, \*\(8, 8, 1\)\)"):
    network.apply(params, state, jnp.zeros((4, 8, 8)), train=False)
  with pytest.raises(TypeError, match='static Python bool'):
    jax.jit(lambda t: network.apply(params, state, jnp.zeros((4, 8, 8, 1)), t))(True)


def test_networks_are_hashable_and_equal_when_built_equal():
  a = build_network(ModelConfig('vit', 16, 1, patch_size=4), (8, 8, 1), _NUM_CLASSES)
  b = build_network(ModelConfig('vit', 16, 1, patch_size=4), (8, 8, 1), _NUM_CLASSES)
  c = build_network(ModelConfig('vit', 16, 2, patch_size=4), (8, 8, 1), _NUM_CLASSES)
  assert a == b and hash(a) == hash(b)
  assert a != c
  assert hash(ModelConfig('mlp', 8, 1)) == hash(ModelConfig('mlp', np.int64(8), 1))


# ------------------------------------------------------------------------------------------
# Convolution formulations (ensembles.training.models.conv) against a float64 NumPy reference.

# float32 sums of at most a few hundred products against float64: relative to the largest value.
_CONV_RTOL = 1e-5
# (spatial input shape, kernel, stride, pads, in features, out features, depthwise): stride 1;
# stride 2 on an odd size; an output smaller than the kernel (member_loop falls back to
# im2col); asymmetric pads of an even kernel; 1-D stride 2; depthwise 5x5 (ConvMixer).
_CONV_CASES = {
  '2d-s1': ((6, 5), (3, 3), (1, 1), ((1, 1), (1, 1)), 3, 4, False),
  '2d-s2-odd': ((7, 7), (3, 3), (2, 2), ((1, 1), (1, 1)), 2, 3, False),
  '2d-tiny': ((2, 2), (3, 3), (1, 1), ((1, 1), (1, 1)), 3, 2, False),
  '2d-k4': ((5, 6), (4, 4), (1, 1), ((2, 1), (2, 1)), 2, 3, False),
  '1d-s2': ((9,), (3,), (2,), ((1, 1),), 2, 3, False),
  'depthwise': ((4, 4), (5, 5), (1, 1), ((2, 2), (2, 2)), 3, 3, True),
}
# in_axes of (x, w) under vmap over members: both per member, a shared input (probes at
# evaluation), shared weights (one network on several batches).
_CONV_VMAP_AXES = {'both': (0, 0), 'shared-x': (None, 0), 'shared-w': (0, None)}
_CONV_BATCH = 2


def _numpy_conv_and_vjp(x_BxPxI, w_KxIxO, g_BxQxO, strides, pads, depthwise):
  """Direct float64 convolution and its VJP (dx, dw), one kernel tap at a time."""
  x_pad = np.pad(x_BxPxI.astype(np.float64), [(0, 0), *pads, (0, 0)])
  w = w_KxIxO.astype(np.float64)
  g = g_BxQxO.astype(np.float64)
  kernel = w.shape[:-2]
  out_sizes = [(n + lo + hi - k) // s + 1
               for n, k, s, (lo, hi) in zip(x_BxPxI.shape[1:-1], kernel, strides, pads)]
  out = np.zeros((x_BxPxI.shape[0], *out_sizes, w.shape[-1]))
  dx_pad, dw = np.zeros_like(x_pad), np.zeros_like(w)
  for tap in itertools.product(*(range(k) for k in kernel)):
    window = (slice(None), *(slice(t, t + (q - 1) * s + 1, s)
                             for t, q, s in zip(tap, out_sizes, strides)), slice(None))
    if depthwise:
      out += x_pad[window] * w[tap][0]
      dw[tap][0] = (x_pad[window] * g).sum(axis=tuple(range(g.ndim - 1)))
      dx_pad[window] += g * w[tap][0]
    else:
      out += x_pad[window] @ w[tap]
      dw[tap] = np.tensordot(x_pad[window], g, axes=(range(g.ndim - 1), range(g.ndim - 1)))
      dx_pad[window] += g @ w[tap].T
  crop = (slice(None), *(slice(lo, lo + n) for (lo, _), n in zip(pads, x_BxPxI.shape[1:-1])),
          slice(None))
  return out, dx_pad[crop], dw


@functools.cache
def _conv_case_results(case: str, axes: str, members: int):
  """Per formulation: vmapped (y, dx, dw) for seeded inputs, plus the inputs (numpy)."""
  spatial, kernel, strides, pads, fan_in, fan_out, depthwise = _CONV_CASES[case]
  x_axis, w_axis = _CONV_VMAP_AXES[axes]
  rng = np.random.default_rng(len(spatial) * 100 + members)
  x_shape = (_CONV_BATCH, *spatial, fan_in)
  w_shape = (*kernel, 1 if depthwise else fan_in, fan_out)
  x = rng.standard_normal(((members,) if x_axis == 0 else ()) + x_shape).astype(np.float32)
  w = rng.standard_normal(((members,) if w_axis == 0 else ()) + w_shape).astype(np.float32)
  channels_last = ('NWC', 'WIO', 'NWC') if len(spatial) == 1 else ('NHWC', 'HWIO', 'NHWC')

  def per_formulation(x, w, g):
    results = {}
    for formulation in CONV_FORMULATIONS:
      conv = functools.partial(
        conv_lib.Convolution(formulation), window_strides=strides, padding=pads,
        dimension_numbers=channels_last, feature_group_count=fan_in if depthwise else 1)

      def member(x_one, w_one, g_one, conv=conv):
        y, vjp = jax.vjp(lambda a, b: conv(a, b), x_one, w_one)
        return (y, *vjp(g_one))

      results[formulation] = jax.vmap(member, in_axes=(x_axis, w_axis, 0))(x, w, g)
    return results

  out_sizes = [(n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(spatial, kernel, strides,
                                                                      pads)]
  g = rng.standard_normal((members, _CONV_BATCH, *out_sizes, fan_out)).astype(np.float32)
  results = jax.tree.map(np.asarray, _compile(per_formulation, x, w, g)(x, w, g))
  return results, x, w, g


_CONV_TEST_CASES = [
  pytest.param(case, axes, members, id=f'{case}-{axes}-E{members}')
  for case in _CONV_CASES
  for axes, members in [*((axes, 4) for axes in _CONV_VMAP_AXES), ('both', 3)]
]


@pytest.mark.parametrize('case, axes, members', _CONV_TEST_CASES)
def test_conv_formulations_match_numpy_forward_and_gradients_under_vmap(case, axes, members):
  _, kernel, strides, pads, _, _, depthwise = _CONV_CASES[case]
  results, x, w, g = _conv_case_results(case, axes, members)
  x_axis, w_axis = _CONV_VMAP_AXES[axes]
  for e in range(members):
    x_e = x[e] if x_axis == 0 else x
    w_e = w[e] if w_axis == 0 else w
    expected = _numpy_conv_and_vjp(x_e, w_e, g[e], strides, pads, depthwise)
    for formulation, outputs in results.items():
      for name, got, want in zip(('y', 'dx', 'dw'), outputs, expected, strict=True):
        np.testing.assert_allclose(
          got[e], want, rtol=0, atol=_CONV_RTOL * np.abs(want).max(),
          err_msg=f'{formulation} {name} member {e} ({case}, {axes}, kernel {kernel})')


def test_conv_formulation_validation_and_defaults():
  with pytest.raises(ValueError, match=r"formulation='fft'.*'im2col'"):
    conv_lib.Convolution('fft')
  assert conv_lib.Convolution().resolved() == conv_lib.DEFAULT_FORMULATIONS.get(
    jax.default_backend(), conv_lib.FALLBACK_FORMULATION)
  assert conv_lib.Convolution('lax') == conv_lib.Convolution('lax')
  assert hash(conv_lib.Convolution('im2col')) == hash(conv_lib.Convolution('im2col'))
  network = _network('cnn', (8, 8, 1))
  with pytest.raises(ValueError, match='formulation'):
    network.with_conv_formulation('fft')
  assert _network('mlp', (8, 8, 1)).with_conv_formulation('lax') == _network('mlp', (8, 8, 1))
  assert network.with_conv_formulation('lax') != network


@pytest.mark.parametrize('name', ['cnn', 'resnet', 'convmixer'])
def test_conv_formulation_keeps_parameters_flops_and_logits(name):
  """Init (names, shapes, values) and FLOPs do not depend on the formulation; logits agree."""
  network = _network(name, (8, 8, 1))
  x_BxS = _inputs((8, 8, 1), 1)
  key = _member_keys()[0]

  def run(key, x_BxS):
    out = {}
    for formulation in CONV_FORMULATIONS:
      variant = network.with_conv_formulation(formulation)
      params, state = variant.init(key)
      logits_BxC, _ = variant.apply(params, state, x_BxS, train=True)
      out[formulation] = (params, logits_BxC)
    return out

  out = jax.tree.map(np.asarray, _compile(run, key, x_BxS)(key, x_BxS))
  reference_params, reference_logits = out['lax']
  for formulation, (params, logits_BxC) in out.items():
    chex.assert_trees_all_equal(params, reference_params)
    np.testing.assert_allclose(logits_BxC, reference_logits, rtol=1e-4, atol=_REORDER_ATOL,
                               err_msg=formulation)
    assert (network.with_conv_formulation(formulation).flops_per_example()
            == network.flops_per_example())
