"""Training: end-to-end runs of `train_and_evaluate` (stop on NaN, resume = one
uninterrupted run, sample grid); the update rule itself is in train_state_test.py."""
import importlib.util
import json
import os

import jax
import numpy as np
import pytest

from configs import csm
from configs import ctm
from score_sde_knee import input_pipeline
from score_sde_knee import train


# --- train_and_evaluate ------------------------------------------------------------------


@pytest.fixture(autouse=True, scope='module')
def _compilation_cache(tmp_path_factory):
  """Each train_and_evaluate call jits afresh: a disk cache compiles each program once."""
  names = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
           'jax_persistent_cache_min_entry_size_bytes')
  old = [getattr(jax.config, n) for n in names]
  for n, v in zip(names, (str(tmp_path_factory.mktemp('jax_cache')), 0.0, 0)):
    jax.config.update(n, v)
  yield
  for n, v in zip(names, old):
    jax.config.update(n, v)


def _synthetic_datasets(nan_at: int | None = None):
  """datasets_fn: the batch of update k+1 is a function of k alone (resumable)."""

  def batch(config, k):
    b, s = config.training.batch_size, config.data.image_size
    r = np.random.default_rng(k)
    image = r.random((b, s, s, 1), dtype=np.float32)
    if k == nan_at:
      image[0, 0, 0, 0] = np.nan
    return {'image': image,
            'cond': (r.integers(0, 3, (b, s, s, 1)) / 2).astype(np.float32)}

  def datasets_fn(config, start_step=0):
    def stream():
      k = start_step
      while True:
        yield batch(config, k)
        k += 1
    return input_pipeline.Datasets(
        train=stream(), eval_batches=lambda: [batch(config, 10**6)],
        num_train_examples=100)

  return datasets_fn


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves((state.params, state.ema_params,
                                                  state.opt_state, state.rng))]


def test_nan_stops_and_resume_equals_an_uninterrupted_run(tmp_path):
  config = ctm.get_config('test')            # 4 steps; checkpoints every 2, preemption 1
  config.sde.num_scales = 2
  with_grid = config.copy_and_resolve_references()
  with_grid.training.sample_every = 2

  # One uninterrupted run (it also writes sample grids at steps 2 and 4).
  a = train.train_and_evaluate(with_grid, str(tmp_path / 'a'),
                               datasets_fn=_synthetic_datasets())
  assert int(a.step) == 4
  assert sorted(os.listdir(tmp_path / 'a' / 'samples')) == ['step_0000002.png',
                                                           'step_0000004.png']
  with open(tmp_path / 'a' / 'config.json') as f:
    assert json.load(f)['method'] == 'ctm'
  assert sorted(os.listdir(tmp_path / 'a' / 'checkpoints')) == ['2', '4']
  assert os.listdir(tmp_path / 'a' / 'preemption') == ['3']
  if importlib.util.find_spec('tensorboard') is not None:  # clu's writers need it.
    assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'a'))

  # A run whose 3rd batch holds a NaN stops at step 3, keeping step 2's checkpoint...
  b_dir = str(tmp_path / 'b')
  with pytest.raises(train.NonFiniteLossError, match='step 3'):
    train.train_and_evaluate(config, b_dir, datasets_fn=_synthetic_datasets(nan_at=2))
  assert sorted(os.listdir(os.path.join(b_dir, 'checkpoints'))) == ['2']
  # ... and, resumed on clean data, ends exactly where the uninterrupted run did.
  b = train.train_and_evaluate(config, b_dir, datasets_fn=_synthetic_datasets())
  assert int(b.step) == 4
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_nan_between_syncs_is_caught_before_the_next_checkpoint(tmp_path):
  # Metrics are fetched only at log / eval / checkpoint steps (here every 4th): a NaN at
  # step 6 is found at step 8, named as step 6, and step 8 is never saved.
  config = ctm.get_config('test')
  t = config.training
  t.num_train_steps, t.log_every, t.eval_every, t.checkpoint_every = 8, 4, 4, 4
  t.preemption_every = 0
  with pytest.raises(train.NonFiniteLossError, match='diverged at step 6'):
    train.train_and_evaluate(config, str(tmp_path), datasets_fn=_synthetic_datasets(nan_at=5))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['4']
  assert not os.path.exists(tmp_path / 'preemption') or not os.listdir(tmp_path / 'preemption')


def test_refuses_a_workdir_of_another_method(tmp_path):
  from score_sde_knee import run_config
  run_config.save(csm.get_config('test'), str(tmp_path))
  with pytest.raises(ValueError, match="method='csm'"):
    train.train_and_evaluate(ctm.get_config('test'), str(tmp_path),
                             datasets_fn=_synthetic_datasets())


def test_batch_not_divisible_by_devices_is_an_error(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, 'device_count', lambda: 3)
  with pytest.raises(ValueError, match='4.*3'):
    train.train_and_evaluate(ctm.get_config('test'), str(tmp_path),
                             datasets_fn=_synthetic_datasets())


def test_several_steps_per_call_match_one_step_per_call(tmp_path):
  config = ctm.get_config('test')            # 4 steps; logs every step
  config.training.log_every = config.training.preemption_every = 2
  one = train.train_and_evaluate(config, str(tmp_path / 'one'),
                                 datasets_fn=_synthetic_datasets())
  config.training.steps_per_call = 2
  two = train.train_and_evaluate(config, str(tmp_path / 'two'),
                                 datasets_fn=_synthetic_datasets())
  assert int(two.step) == 4
  assert sorted(os.listdir(tmp_path / 'two' / 'checkpoints')) == ['2', '4']
  for x, y in zip(_leaves(one), _leaves(two)):  # the same updates, maybe fused otherwise
    np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)
  config.training.steps_per_call = 3
  with pytest.raises(ValueError, match=r'steps_per_call=3: .*num_train_steps'):
    train.train_and_evaluate(config, str(tmp_path / 'three'),
                             datasets_fn=_synthetic_datasets())


def test_progress_lines_only_at_syncs_with_a_rate_from_synced_steps(tmp_path, capsys):
  config = ctm.get_config('test')
  t = config.training
  t.num_train_steps, t.log_every, t.eval_every, t.checkpoint_every = 8, 4, 8, 8
  t.preemption_every = 0
  train.train_and_evaluate(config, str(tmp_path), datasets_fn=_synthetic_datasets())
  lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith('train: ')]
  # The first sync (step 4) starts the clock; the second has a rate over steps 5..8.
  assert len(lines) == 2, lines
  assert lines[0].startswith('train: 4/8 (50%) elapsed')
  assert lines[1].startswith('train: 8/8 (100%) ') and 'ETA 0s' in lines[1]
  assert ' s/step' in lines[1] or ' step/s' in lines[1]
