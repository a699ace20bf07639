"""The lockstep trainer: per-member hparams, cohort vs alone, recording grid, store round trip."""

import dataclasses
import json
import os
import re
import time
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ensembles
from ensembles.training import data as data_lib
from ensembles.training import devices
from ensembles import store
from ensembles.configs import common as config_common
from ensembles.training import config as config_lib
from ensembles.training import experiment
from ensembles.training import periodic
from ensembles.training import placement
from ensembles.training import program as program_lib
from ensembles.training import recording
from ensembles.training import sweep as sweep_lib


def test_recording_grid_dense_early_sparse_late():
  cfg = config_lib.RecordConfig(**config_common.default_record_config())
  grid = recording.recording_epochs(23, cfg)
  expected = ([0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75] + list(range(2, 10))
              + [10, 15, 20, 23])
  np.testing.assert_allclose(grid, expected)
  # 22 steps per epoch: quarter epochs round to whole steps; 0 and the last step present.
  steps = recording.recording_steps(grid, 22)
  assert steps[0] == 0 and steps[-1] == 23 * 22
  assert list(steps[:5]) == [0, 6, 11, 16, 22]  # round(5.5) = 6 (banker's: 5.5 -> 6)
  assert np.all(np.diff(steps) > 0)


def test_recording_grid_short_run_and_fractional_epochs():
  cfg = config_lib.RecordConfig(**config_common.default_record_config())
  np.testing.assert_allclose(recording.recording_epochs(1, cfg), [0, 0.25, 0.5, 0.75, 1])
  np.testing.assert_allclose(recording.recording_epochs(12, cfg)[-4:], [8, 9, 10, 12])


def _cohort_program(data_dir, hparams):
  dataset = data_lib.load_dataset('digits', data_dir=data_dir)
  cohort = sweep_lib.make_cohorts(hparams)[0]
  assert cohort.size == len(hparams)
  program = program_lib.CohortProgram.for_cohort(cohort, dataset.info, eval_batch_size=256)
  return program, data_lib.to_device(dataset)


def _train(program, dataset, hparams, num_steps, mesh):
  """Trains members with the ahead-of-time path that train_and_record uses."""
  hp, dataset, probes = placement.place(
      mesh, program_lib.member_hparams(hparams), dataset,
      placement.make_probes(dataset, np.arange(10), np.arange(10)))
  compiled = program.compile(hp, dataset, probes, mesh)
  return compiled.train(compiled.init(hp), hp, dataset, num_steps)


def _members(**sweep):
  config = ensembles.default_config()
  config.hparams.update(dict(width=16, depth=2, epochs=20, batch_size=32, schedule='cosine'))
  for name, values in sweep.items():
    config.sweep[name] = values
  return sweep_lib.expand_members(config)


def test_member_in_cohort_matches_member_alone(data_dir):
  members = _members(learning_rate=(0.02, 0.1), seed=(3, 4), augment=(False, True))
  program, dataset = _cohort_program(data_dir, members)
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


def test_train_compiles_once_for_any_chunk_length(data_dir):
  members = _members(seed=(0, 1))
  program, dataset = _cohort_program(data_dir, members)
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
def test_evaluate_in_batches_matches_one_forward_pass_per_member(data_dir, eval_batch_size):
  # 23 probes at 7 per batch: 4 batches of 6 (one padding row), not 4 of 7 (5 padding rows).
  assert program_lib._split_batches(np.zeros((23, 2)), 7).shape == (4, 6, 2)
  members = _members(seed=(0, 1))
  program, dataset = _cohort_program(data_dir, members)
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


def test_chunked_training_is_bit_identical_to_one_call(data_dir):
  members = _members(seed=(0, 1), augment=(True,))
  program, dataset = _cohort_program(data_dir, members)
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


def test_member_blocks_train_and_evaluate_like_one_vmap(data_dir):
  members = _members(seed=tuple(range(5)), learning_rate=(0.05,), augment=(False, True))
  program, dataset = _cohort_program(data_dir, members[:5])
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


@pytest.mark.parametrize('arch', ['mlp', 'cnn'])
def test_bfloat16_passes_with_float32_state(data_dir, arch):
  """compute_dtype='bfloat16': every matmul and convolution of a training step in bfloat16,
  while what the step keeps (parameters, optimizer state, BatchNorm statistics) stays
  float32; it trains as float32 does (both at most half the initial loss after 60 steps; how
  far apart they end up is the training's sensitivity to rounding, large for an early cnn)."""
  members = _members(seed=(0, 1), arch=(arch,))
  program, dataset = _cohort_program(data_dir, members)
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


def test_unknown_compute_dtype_is_a_config_error(small_config, tmp_path):
  config = small_config()
  config.train.compute_dtype = 'float16'
  with pytest.raises(ensembles.ConfigError, match=r"config.train.compute_dtype='float16': "
                                                  'accepted float32, bfloat16'):
    ensembles.train_and_record(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_compile_to_fit_halves_member_blocks_until_the_programs_fit(data_dir):
  members = _members(seed=tuple(range(8)), arch=('cnn',))
  program, dataset = _cohort_program(data_dir, members)
  program = dataclasses.replace(program, member_block=0)  # All 4 of a device at once.
  mesh = devices.member_mesh()
  hp, dataset, probes = placement.place(
      mesh, program_lib.member_hparams(members), dataset,
      placement.make_probes(dataset, np.arange(200), np.arange(100)))
  need = {}  # XLA's analysis per block: a block's activations scale with its members.
  for block in (4, 2, 1):
    compiled = dataclasses.replace(program, member_block=block).compile(hp, dataset, probes, mesh)
    need[block] = placement.peak_bytes(compiled)
  assert need[4] > need[2] > need[1]

  def fit(limit):
    return placement.compile_to_fit(program, hp, dataset, probes, mesh, limit)[0]

  assert fit(None).member_block == 0  # No limit (CPU): left as it is.
  assert fit(need[4] / placement.MEMORY_FIT_FRACTION).member_block == 0
  assert fit((need[2] + 1) / placement.MEMORY_FIT_FRACTION).member_block == 2
  assert fit(need[1] / placement.MEMORY_FIT_FRACTION).member_block == 1
  with pytest.raises(ValueError, match='4 members per device need .* even one at a time'):
    fit((need[1] - 1) / placement.MEMORY_FIT_FRACTION)


def test_a_cohort_too_big_for_device_memory_trains_in_smaller_blocks(small_config, tmp_path,
                                                                     monkeypatch, capsys):
  """Devices that report their memory (GPUs, TPUs; faked here) get member blocks that fit."""
  config = small_config(epochs=1, seed=(0, 1, 2, 3))  # mlps: CPU's default blocks hold 8.
  config.train.member_block = 2  # All 2 members of a device at once.
  reference = str(tmp_path / 'reference')
  ensembles.train_and_record(config, reference)
  config.train.member_block = 1
  compiled, *_ = experiment.plan(config).compile_cohort(0, devices.member_mesh())
  one_at_a_time = placement.peak_bytes(compiled)

  def device_holds(limit):
    monkeypatch.setattr(devices, 'memory_limit_bytes', lambda mesh: limit)

  device_holds(int(one_at_a_time / placement.MEMORY_FIT_FRACTION) - 1)
  config.train.member_block = 2  # Set by the user: only a warning when it does not fit.
  with pytest.warns(UserWarning, match='member_block=2 needs .* it may run out of memory'):
    ensembles.train_and_record(config, str(tmp_path / 'warned'))
  config.train.member_block = 0  # Not set: fitted to the device.
  with pytest.raises(ensembles.ConfigError, match=r'cohort 0 \(.*\): 2 members per device'):
    ensembles.train_and_record(config, str(tmp_path / 'too_small'))
  device_holds(int(one_at_a_time / placement.MEMORY_FIT_FRACTION) + 1)
  capsys.readouterr()
  ensembles.train_and_record(config, str(tmp_path / 'fitted'))
  assert 'trains its members in blocks of 1 per device to fit' in capsys.readouterr().out
  a, b = (ensembles.load_trajectories(str(tmp_path / w)) for w in ('reference', 'fitted'))
  np.testing.assert_allclose(a.probs(), b.probs(), rtol=1e-5, atol=1e-6)


def test_cohort_without_augmentation_leaves_it_out(data_dir):
  members = _members(seed=(0, 1))
  program, dataset = _cohort_program(data_dir, members)
  assert not program.any_augment
  hp = program_lib.member_hparams(members)
  dataset = data_lib.to_device(dataset)
  states = [jax.jit(p.train)(jax.jit(p.init)(hp), hp, dataset, 30)
            for p in (program, dataclasses.replace(program, any_augment=True))]
  # Disabled augmentation returns the batch exactly, but the two programs fuse differently, so
  # after 30 steps the parameters agree to float32 rounding (measured max abs diff 4.5e-8).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *states)


def test_learning_rate_zero_member_keeps_its_initial_predictions(small_config, tmp_path):
  # No BatchNorm: its running statistics move even at learning rate 0.
  config = small_config(epochs=2, learning_rate=(0.0, 0.1), seed=(0, 1))
  config.hparams.norm = False
  ensembles.train_and_record(config, str(tmp_path))
  traj = ensembles.load_trajectories(str(tmp_path))
  probs = traj.probs('train')
  lrs = [m['learning_rate'] for m in traj.members]
  for e, lr in enumerate(lrs):
    change = np.abs(probs[e, -1] - probs[e, 0]).max()
    if lr == 0:
      assert change == 0.0, f'member {e} with learning rate 0 moved by {change}'
    else:
      assert change > 0.05, f'member {e} with learning rate {lr} barely moved ({change})'


def test_a_state_on_disk_implies_its_records_are(tmp_path):
  """Resuming starts after the latest state: its records must have been committed before it.

  Records much larger than the state commit later when both are written asynchronously;
  without the ordering every one of these records was still uncommitted when its state was.
  """
  members = 64
  writer = store.CohortWriter(str(tmp_path), 'float32', members)
  probs = jnp.asarray(np.random.default_rng(0).random((members, 20_000, 10), np.float32))
  state = types.SimpleNamespace(step=jnp.int32(5), diverged_at=jnp.full(members, -1))
  evaluation = types.SimpleNamespace(train_probs=probs, test_probs=probs[:, :100],
                                     **{k: jnp.zeros(members) for k in store.METRICS})
  uncommitted = []
  for t in range(5):
    writer.write_record(t, state, evaluation)
    writer.write_state(t, dict(w=jnp.zeros(3)))
    writer._state.wait_until_finished()  # The state is on disk: a kill here ...
    if not os.path.isdir(tmp_path / 'records' / str(t)):  # ... must find its record there.
      uncommitted.append(t)
  writer.close()
  assert uncommitted == []


def test_training_time_includes_waiting_for_the_last_writes(small_config, tmp_path,
                                                             monkeypatch):
  """The summary's wall time (and model-steps/s) counts the writes still pending at the end."""
  wait_s = 1.0
  close = store.CohortWriter.close

  def slow_close(writer):
    time.sleep(wait_s)  # Stands in for Orbax finishing the last asynchronous writes.
    close(writer)

  monkeypatch.setattr(store.CohortWriter, 'close', slow_close)
  summary = ensembles.train_and_record(small_config(), str(tmp_path))
  (cohort,) = summary.cohorts
  assert cohort.train_seconds >= wait_s
  assert cohort.model_steps_per_second <= cohort.members * cohort.steps / wait_s


def test_store_round_trip(small_config, data_dir, tmp_path):
  config = small_config(epochs=2, arch=('mlp', 'cnn'), seed=(0, 1))
  summary = ensembles.train_and_record(config, str(tmp_path))
  assert summary.num_members == 4 and len(summary.cohorts) == 2
  traj = ensembles.load_trajectories(str(tmp_path))
  members = sweep_lib.expand_members(config)
  assert traj.members == [m.to_dict() for m in members]
  np.testing.assert_allclose(traj.epochs, [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2])
  dataset = data_lib.load_dataset('digits', data_dir=data_dir)
  spe = dataset.info.num_train // 64
  np.testing.assert_array_equal(traj.steps[0], np.round(traj.epochs * spe))
  assert traj.status == ['ok'] * 4
  for split, size in (('train', 200), ('test', 100)):
    probs = traj.probs(split)
    assert probs.shape == (4, 9, size, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    labels = traj.labels(split)
    y = dataset.y_train if split == 'train' else dataset.y_test
    np.testing.assert_array_equal(labels, np.asarray(y)[traj.probe_indices(split)])
    # Stored accuracy agrees with the stored probabilities (computed independently here).
    accuracy = (probs.argmax(-1) == labels).mean(-1)
    np.testing.assert_allclose(traj.metrics[f'{split}_accuracy'], accuracy, atol=1e-6)
    loss = -np.log(np.take_along_axis(probs, labels[None, None, :, None], -1)[..., 0]).mean(-1)
    np.testing.assert_allclose(traj.metrics[f'{split}_loss'], loss, rtol=1e-4)
  # Training helped: final train accuracy well above chance (0.1).
  assert traj.metrics['train_accuracy'][:, -1].min() > 0.5


def test_float16_storage_and_rerun_resumes_without_training(small_config, tmp_path):
  config = small_config(epochs=1)
  config.record.dtype = 'float16'
  ensembles.train_and_record(config, str(tmp_path))
  again = ensembles.train_and_record(config, str(tmp_path))
  assert again.cohorts[0].resumed_from_step == again.cohorts[0].steps
  probs = ensembles.load_trajectories(str(tmp_path)).probs('train')
  assert probs.dtype == np.float32
  # float16 keeps ~3 decimal digits: rows sum to 1 within a few 1e-3.
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=5e-3)


def test_workdir_with_another_sweep_is_refused(small_config, tmp_path):
  ensembles.train_and_record(small_config(seed=(0,)), str(tmp_path))
  with pytest.raises(ensembles.ConfigError, match='holds a different sweep'):
    ensembles.train_and_record(small_config(seed=(0, 1)), str(tmp_path))
  summary = ensembles.train_and_record(small_config(seed=(0, 1)), str(tmp_path),
                                       overwrite=True)
  assert summary.num_members == 2


def test_non_store_and_other_format_version_give_clear_errors(small_config, tmp_path):
  with pytest.raises(ensembles.StoreError, match='is not a trajectories store'):
    ensembles.load_trajectories(str(tmp_path))
  ensembles.train_and_record(small_config(), str(tmp_path))
  path = os.path.join(tmp_path, 'sweep.json')
  manifest = json.load(open(path))
  manifest['format_version'] = store.FORMAT_VERSION + 1
  json.dump(manifest, open(path, 'w'))
  with pytest.raises(ensembles.StoreError, match='format version 2'):
    ensembles.load_trajectories(str(tmp_path))


@pytest.mark.parametrize('section, key, value, message', [
    ('hparams', 'batch_size', 5000,
     'hparams.batch_size=5000 is larger than the 1438 training examples'),
    ('hparams', 'arch', 'resnet', 'cohort 0'),  # depth 1 is not a Wide-ResNet depth.
    ('train', 'member_block', -1, r'config.train.member_block=-1: accepted 0'),
])
def test_bad_input_fails_before_anything_is_written(small_config, tmp_path, section, key, value,
                                                    message):
  config = small_config()
  config[section][key] = value
  workdir = os.path.join(tmp_path, 'run')
  with pytest.raises(ensembles.ConfigError, match=message):
    ensembles.train_and_record(config, workdir)
  assert not os.path.exists(workdir)


def _pretrained(data_dir, init, **hparams):
  """Two members (seeds 0, 1) of ``init``, pretrained on one device, one member at a time.

  Returns (members, program, dataset, state).
  """
  members = _members(seed=(0, 1))
  members = [dataclasses.replace(m, init=init, init_epochs=3, **hparams) for m in members]
  program, dataset = _cohort_program(data_dir, members)
  program = dataclasses.replace(program, member_block=1)  # Pretrains in blocks of 1 member.
  mesh = devices.member_mesh(jax.devices()[:1])
  hp, dataset, _ = placement.place(mesh, program_lib.member_hparams(members), dataset, None)
  state = jax.jit(program.pretrain)(jax.jit(program.init)(hp), hp, dataset)
  return members, program, dataset, state


def test_random_labels_init_is_training_on_shuffled_labels(data_dir):
  members, program, dataset, state = _pretrained(data_dir, 'random_labels')
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
    ref_program, _ = _cohort_program(data_dir, [plain])
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


def test_subset_init_memorises_its_subset(data_dir):
  members, program, dataset, state = _pretrained(data_dir, 'subset', init_subset=0.1)
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


def test_states_between_distant_recordings_and_a_resume_from_one(small_config, tmp_path,
                                                                  monkeypatch):
  """Recordings 5 epochs apart (epochs 10, 15, 16): a state at each epoch's end when one is
  due, under its training step; a crash right after one resumes there, bit-identical."""
  config = small_config(epochs=16, seed=(0, 1))
  config.train.checkpoint_every_seconds = 0.0  # Every chance to save one is taken ...
  monkeypatch.setattr(periodic, 'MIN_CHUNK_SECONDS', 0.0)  # ... at every epoch's end.
  reference, resumed = str(tmp_path / 'reference'), str(tmp_path / 'resumed')
  ensembles.train_and_record(config, reference)
  spe = 1438 // 64  # digits' training examples per batch of 64
  crash_after = 12 * spe  # An epoch's end between the recordings at 10 and 15 epochs.

  class Crash(Exception):
    pass

  saved, write_state = [], store.CohortWriter.write_state

  def crash_after_epoch_12(writer, step, state):
    write_state(writer, step, state)
    saved.append(step)
    if step == crash_after:
      raise Crash

  with monkeypatch.context() as patch:
    patch.setattr(store.CohortWriter, 'write_state', crash_after_epoch_12)
    with pytest.raises(Crash):
      ensembles.train_and_record(config, resumed)
  assert saved[-3:] == [10 * spe, 11 * spe, 12 * spe]
  summary = ensembles.train_and_record(config, resumed)
  assert summary.cohorts[0].resumed_from_step == crash_after
  a, b = ensembles.load_trajectories(reference), ensembles.load_trajectories(resumed)
  np.testing.assert_array_equal(a.steps, b.steps)
  for split in ('train', 'test'):
    np.testing.assert_array_equal(a.probs(split), b.probs(split))
  for k, v in a.metrics.items():
    np.testing.assert_array_equal(v, b.metrics[k])


def test_pretrained_cohort_resumes_without_pretraining_again(small_config, tmp_path,
                                                           monkeypatch):
  config = small_config(epochs=1, seed=(0, 1))
  config.hparams.update(dict(init='subset', init_subset=0.2, init_epochs=1))
  config.train.checkpoint_every_seconds = 0.0  # A resumable state at every recording.
  reference, resumed = str(tmp_path / 'reference'), str(tmp_path / 'resumed')
  ensembles.train_and_record(config, reference)

  class Crash(Exception):
    pass

  write_record = store.CohortWriter.write_record

  def crash_at_third(writer, t, *args):
    if t == 3:
      raise Crash
    return write_record(writer, t, *args)

  with monkeypatch.context() as patch:
    patch.setattr(store.CohortWriter, 'write_record', crash_at_third)
    with pytest.raises(Crash):
      ensembles.train_and_record(config, resumed)
  summary = ensembles.train_and_record(config, resumed)
  assert summary.cohorts[0].resumed_from_step is not None
  a, b = ensembles.load_trajectories(reference), ensembles.load_trajectories(resumed)
  for split in ('train', 'test'):
    np.testing.assert_array_equal(a.probs(split), b.probs(split))
