"""checkpointing: a bit-exact save / restore round trip, which steps are kept where, the
saved config's checks (naming the field), and a checkpoint that does not fit the model."""
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import csm
from configs import ctm
from score_sde_knee import checkpointing
from score_sde_knee import parallel
from score_sde_knee import train_state as ts


def _config(num_train_steps=5, checkpoint_every=2, preemption_every=1, keep=2):
  c = ctm.get_config('test')
  t = c.training
  t.num_train_steps, t.checkpoint_every, t.preemption_every = (
      num_train_steps, checkpoint_every, preemption_every)
  t.keep_checkpoints = keep
  return c


def _state(seed=0, width=4):
  """A small TrainState of every kind of leaf training saves (float32, bfloat16, the int32
  step and Adam's count, the uint32 key), replicated on the mesh."""
  rng = np.random.default_rng(seed)
  params = {'Conv_0': {'kernel': jnp.asarray(rng.normal(size=(3, width)), jnp.float32),
                       'bias': jnp.asarray(rng.normal(size=(width,)), jnp.bfloat16)}}
  tx = ts.make_optimizer(ctm.get_config('test'))
  state = ts.TrainState(step=jnp.asarray(seed, jnp.int32), params=params,
                        ema_params=jax.tree.map(lambda x: x * 0.5, params),
                        opt_state=tx.init(params), rng=jax.random.PRNGKey(seed))
  return parallel.replicate(state, parallel.make_mesh())


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def test_save_and_restore_round_trip_bit_exactly(tmp_path):
  config, state = _config(), _state(seed=7)
  ckpt = checkpointing.Checkpoints(str(tmp_path), config)
  ckpt.maybe_save(2, state)
  ckpt.close()
  ckpt = checkpointing.Checkpoints(str(tmp_path), config)
  restored, step = ckpt.restore(_state(seed=1))  # the target gives structure only
  ckpt.close()
  assert step == 2
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for x, y in zip(_leaves(restored), _leaves(state)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


def _batches(iterator, n):
  return [int(x) for x in np.concatenate([next(iterator) for _ in range(n)])]


def test_the_data_iterator_state_is_saved_and_restored_with_the_state(tmp_path):
  import grain  # pylint: disable=g-import-not-at-top
  ds = grain.MapDataset.range(7).shuffle(seed=5).repeat().batch(3).to_iter_dataset(
      grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
  config, state = _config(), _state(seed=3)
  fed = iter(ds)
  _batches(fed, 2)
  ckpt = checkpointing.Checkpoints(str(tmp_path), config)
  ckpt.maybe_save(2, state, data=fed)       # kept checkpoint
  _batches(fed, 1)
  ckpt.maybe_save(3, state, data=fed)       # preemption checkpoint
  expected = _batches(fed, 3)               # what an uninterrupted run reads after step 3
  ckpt.close()
  ckpt = checkpointing.Checkpoints(str(tmp_path), config)
  fresh = iter(ds)
  assert ckpt.restore_data(3, fresh)
  assert _batches(fresh, 3) == expected
  again = iter(ds)
  assert ckpt.restore_data(2, again)
  assert _batches(again, 4) == _batches(iter(ds), 6)[2 * 3:]  # batches of 3
  ckpt.close()


def test_a_checkpoint_without_data_state_restores_the_state_only(tmp_path):
  """Checkpoints written before the data state was saved hold the state alone, as the
  single item orbax then called 'default'."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  config, state = _config(), _state(seed=4)
  with ocp.CheckpointManager(tmp_path / 'checkpoints',
                             item_handlers=ocp.StandardCheckpointHandler()) as old:
    old.save(2, args=ocp.args.StandardSave(state))
  ckpt = checkpointing.Checkpoints(str(tmp_path), config)
  restored, step = ckpt.restore(_state(seed=1))
  assert step == 2
  for x, y in zip(_leaves(restored), _leaves(state)):
    np.testing.assert_array_equal(x, y)
  assert not ckpt.restore_data(2, object())  # nothing to restore: left as it is
  ckpt.maybe_save(4, state, data=iter([1, 2]))  # an iterator without state: state only
  ckpt.close()
  assert not os.path.exists(tmp_path / 'checkpoints' / '4' / 'data')
  assert os.path.exists(tmp_path / 'checkpoints' / '4' / 'default')


def test_kept_and_preemption_steps_latest_and_missing_steps(tmp_path):
  config = _config(num_train_steps=5, checkpoint_every=2, preemption_every=1, keep=2)
  ckpt = checkpointing.Checkpoints(str(tmp_path), config)
  assert ckpt.latest_step() is None and ckpt.restore(_state()) is None
  for step in range(1, 6):
    assert ckpt.due(step)
    ckpt.maybe_save(step, _state(seed=step))
  ckpt.close()
  # Kept: every 2nd step and the last, the newest 2 of them; preemption: the newest other.
  assert sorted(os.listdir(tmp_path / checkpointing.KEPT_DIR)) == ['4', '5']
  assert os.listdir(tmp_path / checkpointing.PREEMPTION_DIR) == ['3']
  ckpt = checkpointing.Checkpoints(str(tmp_path), config)
  assert ckpt.latest_step() == 5
  for step in (None, 3, 4):
    restored, got = ckpt.restore(_state(), step)
    assert got == (step or 5)
    assert int(restored.step) == got  # each checkpoint holds the state saved at its step
  with pytest.raises(ValueError, match=re.escape(
      f'No checkpoint of step 2 in {tmp_path}; it has steps [3, 4, 5].')):
    ckpt.restore(_state(), 2)
  ckpt.close()


def test_due_without_periods_is_the_last_step_only(tmp_path):
  ckpt = checkpointing.Checkpoints(
      str(tmp_path), _config(num_train_steps=6, checkpoint_every=0, preemption_every=0))
  assert [s for s in range(1, 9) if ckpt.due(s)] == [6]
  ckpt = checkpointing.Checkpoints(
      str(tmp_path), _config(num_train_steps=7, checkpoint_every=3, preemption_every=2))
  assert [s for s in range(1, 9) if ckpt.due(s)] == [2, 3, 4, 6, 7, 8]
  ckpt.close()


def test_a_checkpoint_of_other_shapes_names_the_array_and_both_shapes(tmp_path):
  config = _config()
  ckpt = checkpointing.Checkpoints(str(tmp_path), config)
  ckpt.maybe_save(2, _state(width=4))
  ckpt.close()
  ckpt = checkpointing.Checkpoints(str(tmp_path), config)
  with pytest.raises(ValueError, match=re.escape(
      f'The checkpoint {tmp_path}/checkpoints/2 does not fit this config: '
      'params/Conv_0/bias has shape (4,) in the checkpoint but (8,) in the model. '
      'Was its config.json edited?')):
    ckpt.restore(_state(width=8))
  ckpt.close()


def test_a_checkpoint_of_another_structure_is_a_clear_error(tmp_path):
  config = _config()
  ckpt = checkpointing.Checkpoints(str(tmp_path), config)
  ckpt.maybe_save(2, _state())
  ckpt.close()
  other = _state()
  other = other.replace(params={**other.params, 'Dense_1': other.params['Conv_0']})
  ckpt = checkpointing.Checkpoints(str(tmp_path), config)
  with pytest.raises(ValueError, match=re.escape(
      f"The checkpoint {tmp_path}/checkpoints/2 does not fit this config's train state")):
    ckpt.restore(other)
  ckpt.close()


def test_config_json_is_written_once_then_checked(tmp_path):
  config = ctm.get_config('test')
  checkpointing.check_and_save_config(config, str(tmp_path))
  path = tmp_path / checkpointing.CONFIG_FILE
  assert json.loads(path.read_text()) == json.loads(config.to_json())
  config.training.num_train_steps = 99  # not part of what checkpoints mean: allowed
  checkpointing.check_and_save_config(config, str(tmp_path))
  assert json.loads(path.read_text())['training']['num_train_steps'] == 4  # not rewritten


@pytest.mark.parametrize('field, value, message', [
    ('model.nf', 16, r'holds a run with model\.nf=8 .*asks for model\.nf=16'),
    ('model.ch_mult', (1, 4), r'model\.ch_mult=\[1, 2\] .*asks for model\.ch_mult=\[1, 4\]'),
    ('data.image_size', 32, r'data\.image_size=16 .*asks for data\.image_size=32'),
    ('condition', 'contour', r"condition='contour_bone' .*asks for condition='contour'"),
])
def test_a_resume_with_another_model_names_the_field(tmp_path, field, value, message):
  config = ctm.get_config('contour_bone,test')
  checkpointing.check_and_save_config(config, str(tmp_path))
  section, _, name = field.rpartition('.')
  setattr(config[section] if section else config, name, value)
  with pytest.raises(ValueError, match=message):
    checkpointing.check_and_save_config(config, str(tmp_path))


def test_csm_serves_both_conditions_but_not_another_method(tmp_path):
  checkpointing.check_and_save_config(csm.get_config('contour_bone,test'), str(tmp_path))
  checkpointing.check_and_save_config(csm.get_config('contour,test'), str(tmp_path))
  with pytest.raises(ValueError, match=r"method='csm' .*asks for method='ctm'"):
    checkpointing.check_and_save_config(ctm.get_config('contour,test'), str(tmp_path))


def test_checkpoints_without_config_json_and_a_broken_one_are_refused(tmp_path):
  config = _config()
  ckpt = checkpointing.Checkpoints(str(tmp_path / 'w'), config)
  ckpt.maybe_save(2, _state())
  ckpt.close()
  with pytest.raises(ValueError, match=f'{tmp_path}/w holds checkpoints but no config.json'):
    checkpointing.check_and_save_config(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w' / checkpointing.CONFIG_FILE)
  (tmp_path / 'w' / checkpointing.CONFIG_FILE).write_text('{"method": ')
  with pytest.raises(ValueError, match=r'config\.json is not valid JSON'):
    checkpointing.check_and_save_config(config, str(tmp_path / 'w'))
