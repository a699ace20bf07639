"""Tests of ensembles.training.program: the cohort program (per-member hparams, cohort vs
alone, one compile for every chunk length, evaluation in batches, member blocks, bfloat16,
augmentation left out, init choices and pretraining)."""

import dataclasses
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ensembles
from ensembles.training import config as config_lib
from ensembles.training import data as data_lib
from ensembles.training import devices
from ensembles.training import placement
from ensembles.training import program as program_lib


def _train(program, dataset, hparams, num_steps, mesh):
  """Trains members with the ahead-of-time path that train_and_record uses."""
  hp, dataset, probes = placement.place(
      mesh, program_lib.member_hparams(hparams), dataset,
      placement.make_probes(dataset, np.arange(10), np.arange(10)))
  compiled = program.compile(hp, dataset, probes, mesh)
  return compiled.train(compiled.init(hp), hp, dataset, num_steps)


def test_member_in_cohort_matches_member_alone(cohort_program, make_members):
  members = make_members(learning_rate=(0.02, 0.1), seed=(3, 4), augment=(False, True))
  program, dataset = cohort_program(members)
  num_steps = 300
  # The cohort's members are sharded over every device (2 on the test machine).
  cohort = _train(program, dataset, members, num_steps, devices.member_mesh())
  for i, member in enumerate(members):
    alone = _train(program, dataset, [member], num_steps, devices.member_mesh(jax.devices()[:1]))
    jax.tree.map(
        # vmap batches the members' matmuls into one XLA dot with another blocking, so
        # float rounding differs from the E=1 program; over 300 steps with momentum the
        # parameters measured here agree to ~1e-6 relative (max abs diff ~1e-6).
        lambda c, a: np.testing.assert_allclose(np.asarray(c)[i], np.asarray(a)[0],
                                                rtol=1e-4, atol=1e-5),
        cohort.members.params, alone.members.params)
  # The members really differ from each other (different seeds, rates, augmentation).
  first = jax.tree.leaves(cohort.members.params)[0]
  assert not np.allclose(first[0], first[1])


def test_train_compiles_once_for_any_chunk_length(cohort_program, make_members):
  members = make_members(seed=(0, 1))
  program, dataset = cohort_program(members)
  mesh = devices.member_mesh()
  hp, dataset, _ = placement.place(mesh, program_lib.member_hparams(members), dataset, None)
  shardings = devices.member_shardings(jax.eval_shape(program.init, hp), mesh)
  # Chunks between recording times have many lengths; none may trigger a retrace.
  train = jax.jit(chex.assert_max_traces(program.train, n=1), out_shardings=shardings)
  state = jax.jit(program.init, out_shardings=shardings)(hp)
  for num_steps in (3, 5, 7, 22):
    state = train(state, hp, dataset, num_steps)
  assert int(state.step) == 37


@pytest.mark.parametrize('eval_batch_size', [7, 23, 1024])
def test_evaluate_in_batches_matches_one_forward_pass_per_member(eval_batch_size, cohort_program,
                                                                 make_members):
  # 23 probes at 7 per batch: 4 batches of 6 (one padding row), not 4 of 7 (5 padding rows).
  assert program_lib._split_batches(np.zeros((23, 2)), 7).shape == (4, 6, 2)
  members = make_members(seed=(0, 1))
  program, dataset = cohort_program(members)
  program = dataclasses.replace(program, eval_batch_size=eval_batch_size)
  hp = program_lib.member_hparams(members)
  state = jax.jit(program.train)(jax.jit(program.init)(hp), hp, dataset, 5)
  probes = placement.make_probes(dataset, np.arange(23), np.arange(11))
  evaluation = jax.jit(program.evaluate)(state, probes)
  for i in range(len(members)):
    member = jax.tree.map(lambda x: x[i], state.members)
    for x, probs in ((probes.x_train, evaluation.train_probs), (probes.x_test,
                                                                evaluation.test_probs)):
      # The reference: every probe in one batch, no splitting, padding or lax.map.
      logits, _ = program.network.apply(member.params, member.model_state, x, train=False)
      np.testing.assert_allclose(probs[i], jax.nn.softmax(logits), rtol=1e-5, atol=1e-7)


def test_chunked_training_is_bit_identical_to_one_call(cohort_program, make_members):
  members = make_members(seed=(0, 1), augment=(True,))
  program, dataset = cohort_program(members)
  mesh = devices.member_mesh()
  hp, dataset, _ = placement.place(mesh, program_lib.member_hparams(members), dataset, None)
  init, train = jax.jit(program.init), jax.jit(program.train)
  whole = train(init(hp), hp, dataset, 54)
  chunked = init(hp)
  # Chunks starting at step 0 (an epoch boundary), mid-epoch (3) and at the next boundary (44).
  assert program.steps_per_epoch == 44
  for num_steps in (3, 41, 10):
    chunked = train(chunked, hp, dataset, num_steps)
  jax.tree.map(np.testing.assert_array_equal, whole, chunked)


def test_member_blocks_train_and_evaluate_like_one_vmap(cohort_program, make_members):
  members = make_members(seed=tuple(range(5)), learning_rate=(0.05,), augment=(False, True))
  program, dataset = cohort_program(members[:5])
  assert program.member_block == program_lib.CPU_MEMBER_BLOCKS['mlp']
  # 5 members in blocks of at most 2: 3 blocks of 2, the last filled up with a copy.
  one_vmap, blocks = (dataclasses.replace(program, member_block=b) for b in (0, 2))
  hp = program_lib.member_hparams(members[:5])
  probes = placement.make_probes(dataset, np.arange(30), np.arange(20))
  results = []
  for p in (one_vmap, blocks):
    state = jax.jit(p.train)(jax.jit(p.init)(hp), hp, dataset, 60)
    results.append((state, jax.jit(p.evaluate)(state, probes)))
  (state_a, eval_a), (state_b, eval_b) = results
  assert int(state_b.step) == 60 and state_b.alive.shape == (5,)
  # The same arithmetic per member; only the batched matmuls' batch count differs (5 vs 2),
  # which may change XLA's kernel choice and so float rounding (measured: bit-identical on
  # 2 CPU cores, max abs diff 0 over every state and evaluation leaf).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               (state_a, eval_a), (state_b, eval_b))


def test_member_block_setting_leaves_the_trajectories_alone(small_config, tmp_path):
  stored = []
  for member_block in (1, 1000):  # 3 members (2 per device): one at a time, or all at once.
    config = small_config(epochs=2, seed=(0, 1, 2))
    config.train.member_block = member_block
    workdir = os.path.join(tmp_path, str(member_block))
    ensembles.train_and_record(config, workdir)
    stored.append(ensembles.load_trajectories(workdir))
  np.testing.assert_allclose(stored[0].probs('train'), stored[1].probs('train'),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('arch', [
    'mlp',
    # Slow: CPUs run bfloat16 convolutions emulated, so this trains slowly. By default [mlp]
    # checks the mechanism (bfloat16 compute, float32 state) and
    # tests/benchmarks/test_gpu_bench.py trains a cnn in bfloat16.
    pytest.param('cnn', marks=pytest.mark.slow),
])
def test_bfloat16_passes_with_float32_state(arch, cohort_program, make_members):
  """compute_dtype='bfloat16': every matmul and convolution of a training step in bfloat16,
  while what the step keeps (parameters, optimizer state, BatchNorm statistics) stays
  float32; it trains as float32 does (both at most half the initial loss after 60 steps; how
  far apart they end up is the training's sensitivity to rounding, large for an early cnn)."""
  members = make_members(seed=(0, 1), arch=(arch,))
  program, dataset = cohort_program(members)
  hp = program_lib.member_hparams(members)
  state = jax.jit(program.init)(hp)
  probes = placement.make_probes(dataset, np.arange(200), np.arange(100))
  initial = np.asarray(jax.jit(program.evaluate)(state, probes).train_loss)
  for dtype in config_lib.COMPUTE_DTYPES:
    p = dataclasses.replace(program, compute_dtype=dtype)
    text = str(jax.make_jaxpr(lambda s: p.train(s, hp, dataset, 2))(state))
    kinds = set(re.findall(r':(\w+)\[[^\]]*\] = (?:dot_general|conv_general_dilated)', text))
    assert kinds == {'f32' if dtype == 'float32' else 'bf16'}, (dtype, kinds)
    trained = jax.jit(p.train)(state, hp, dataset, 60)
    assert {leaf.dtype for leaf in jax.tree.leaves(trained.members)
            if jnp.issubdtype(leaf.dtype, jnp.floating)} == {np.dtype('float32')}
    evaluation = jax.jit(p.evaluate)(trained, probes)
    assert evaluation.train_probs.dtype == np.float32  # Evaluation is float32 either way.
    assert (np.asarray(evaluation.train_loss) < 0.5 * initial).all(), (dtype, initial)


def test_cohort_without_augmentation_leaves_it_out(cohort_program, make_members):
  members = make_members(seed=(0, 1))
  program, dataset = cohort_program(members)
  assert not program.any_augment
  hp = program_lib.member_hparams(members)
  dataset = data_lib.to_device(dataset)
  states = [jax.jit(p.train)(jax.jit(p.init)(hp), hp, dataset, 30)
            for p in (program, dataclasses.replace(program, any_augment=True))]
  # Disabled augmentation returns the batch exactly, but the two programs fuse differently, so
  # after 30 steps the parameters agree to float32 rounding (measured max abs diff 4.5e-8).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *states)


def _pretrained(cohort_program, make_members, init, **hparams):
  """Two members (seeds 0, 1) of ``init``, pretrained on one device, one member at a time.

  Returns (members, program, dataset, state).
  """
  members = make_members(seed=(0, 1))
  members = [dataclasses.replace(m, init=init, init_epochs=3, **hparams) for m in members]
  program, dataset = cohort_program(members)
  program = dataclasses.replace(program, member_block=1)  # Pretrains in blocks of 1 member.
  mesh = devices.member_mesh(jax.devices()[:1])
  hp, dataset, _ = placement.place(mesh, program_lib.member_hparams(members), dataset, None)
  state = jax.jit(program.pretrain)(jax.jit(program.init)(hp), hp, dataset)
  return members, program, dataset, state


def test_random_labels_init_is_training_on_shuffled_labels(cohort_program, make_members):
  members, program, dataset, state = _pretrained(cohort_program, make_members, 'random_labels')
  assert program.pretrain_steps == 3 * program.steps_per_epoch
  assert int(state.step) == 0 and bool(state.alive.all())
  # Reference: plain training (constant rate) of a default-init member whose key is the
  # pretraining key, on a dataset whose labels are shuffled with the pretraining label stream.
  # The reference trains E=1 against the cohort's E=2, so XLA blocks the matmuls differently:
  # agreement to float32 rounding (measured max abs diff 5e-8), not bit-identity.
  fold = lambda key, stream: jax.random.fold_in(key, stream)
  for e, member in enumerate(members):
    key = jax.random.PRNGKey(member.seed)
    pre_key = fold(key, program_lib.PRETRAIN_STREAM)
    shuffle_N = data_lib.epoch_permutation(
        fold(pre_key, program_lib.CHOICE_STREAM), 0, dataset.info.num_train)
    shuffled = dataset.replace(y_train=np.asarray(dataset.y_train)[np.asarray(shuffle_N)])
    plain = dataclasses.replace(member, init='default', schedule='constant')
    ref_program, _ = cohort_program([plain])
    hp = program_lib.member_hparams([plain]).replace(key=pre_key[None])
    ref = jax.jit(ref_program.init)(hp.replace(key=key[None]))  # The member's own init.
    ref = jax.jit(ref_program.train)(ref, hp, shuffled, program.pretrain_steps)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a)[e], np.asarray(b)[0],
                                                         rtol=1e-4, atol=1e-6),
                 state.members.params, ref.members.params)
  # The optimizer starts afresh: SGD momentum traces are zero again.
  for trace in jax.tree.leaves(state.members.opt_state):
    if trace.ndim > 1:
      assert not np.any(np.asarray(trace)), 'optimizer state was not reset after pretraining'


def test_subset_init_memorises_its_subset(cohort_program, make_members):
  members, program, dataset, state = _pretrained(cohort_program, make_members, 'subset',
                                                 init_subset=0.1)
  n = dataset.info.num_train
  assert program.subset_size == round(0.1 * n)
  x_NxS = data_lib.normalize(dataset.x_train, dataset.mean, dataset.std)
  y_N = np.asarray(dataset.y_train)
  for e, member in enumerate(members):
    pre_key = jax.random.fold_in(jax.random.PRNGKey(member.seed), program_lib.PRETRAIN_STREAM)
    order_N = np.asarray(data_lib.epoch_permutation(
        jax.random.fold_in(pre_key, program_lib.CHOICE_STREAM), 0, n))
    params, model_state = jax.tree.map(lambda a: a[e], (state.members.params,
                                                        state.members.model_state))
    logits_NxC, _ = program.network.apply(params, model_state, x_NxS, train=False)
    correct_N = np.asarray(logits_NxC).argmax(-1) == y_N
    k = program.subset_size
    inside, outside = correct_N[order_N[:k]], correct_N[order_N[k:]]
    # 3 epochs' worth of steps on 144 examples (~20 passes): the subset is fit almost
    # perfectly, the rest of the train set less well (measured: 1.000 vs 0.909 and 0.912).
    assert inside.mean() > 0.97, inside.mean()
    assert inside.mean() - outside.mean() > 0.05, (inside.mean(), outside.mean())


def test_init_choices_train_and_record(small_config, tmp_path):
  config = small_config(epochs=1, seed=(0,))
  config.variants = (dict(init='default'), dict(init='random_labels', init_epochs=2),
                     dict(init='subset', init_subset=0.2, init_epochs=2))
  summary = ensembles.train_and_record(config, str(tmp_path))
  assert len(summary.cohorts) == 3
  traj = ensembles.load_trajectories(str(tmp_path))
  accuracy = {m['init']: a for m, a in zip(traj.members, traj.metrics['train_accuracy'][:, 0])}
  # Step 0: default is an untrained network, random_labels is near chance on the true labels,
  # subset already classifies most of the train set (an MLP on 20% of digits). Measured:
  # default 0.135, random_labels 0.040, subset 0.915 on the 200 train probes.
  assert accuracy['subset'] > 0.7, accuracy
  assert accuracy['random_labels'] < 0.4, accuracy


def test_subset_smaller_than_a_batch_is_refused_before_compiling(small_config, tmp_path):
  config = small_config()
  config.hparams.update(dict(init='subset', init_subset=0.01))
  with pytest.raises(ensembles.ConfigError, match='init_subset=0.01 keeps 14 of the 1438'):
    ensembles.train_and_record(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')
