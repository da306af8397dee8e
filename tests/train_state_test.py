"""train_state: the update (clip + Adam + warm-up + EMA) against a float64 NumPy reference,
the schedule's formula, the RNG stream of the steps, the eval step, the initial state."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ctm
from score_sde_knee import model_utils
from score_sde_knee import parallel
from score_sde_knee import train_state as ts


def _toy_loss(params, batch, rng, train_mode):
  """0.5 * mean over examples of ||w - x||^2: gradient w - mean(x)."""
  del rng, train_mode
  per_example = 0.5 * jnp.sum((params['w'][None] - batch['image']) ** 2, axis=-1)
  return jnp.mean(per_example), {'per_example_loss': per_example}


def _toy_state(config, w0):
  params = {'w': jnp.asarray(w0, jnp.float32)}
  return ts.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       ema_params=jax.tree.map(jnp.copy, params),
                       opt_state=ts.make_optimizer(config).init(params),
                       rng=jax.random.PRNGKey(0))


def _jit_step(config, loss_fn=_toy_loss):
  return jax.jit(functools.partial(ts.train_step, loss_fn=loss_fn,
                                   tx=ts.make_optimizer(config),
                                   schedule=ts.learning_rate_schedule(config),
                                   ema_rate=config.model.ema_rate))


def _numpy_reference(w, batches, config):
  """float64 clip_by_global_norm + Adam (bias-corrected) + warm-up + EMA with warm-up."""
  o = config.optim
  m = np.zeros_like(w)
  v = np.zeros_like(w)
  ema = w.copy()
  out = []
  for k, x in enumerate(batches):
    g = w - x.mean(axis=0)
    norm = np.linalg.norm(g)
    g_c = g * min(1.0, o.grad_clip / norm)
    m = o.beta1 * m + (1 - o.beta1) * g_c
    v = o.beta2 * v + (1 - o.beta2) * g_c**2
    m_hat = m / (1 - o.beta1 ** (k + 1))
    v_hat = v / (1 - o.beta2 ** (k + 1))
    lr = o.lr * min((k + 1) / o.warmup, 1.0)
    w = w - lr * m_hat / (np.sqrt(v_hat) + o.eps)
    decay = min(config.model.ema_rate, (1 + k) / (10 + k))  # EMA warm-up
    ema = decay * ema + (1 - decay) * w
    out.append((w.copy(), ema.copy(), norm, lr))
  return out


def test_train_step_matches_numpy_adam_with_clipping_warmup_and_ema():
  config = ctm.get_config('test')
  # ema_rate 0.15: the warm-up decides step 0, the rate steps 1-3.
  config.optim.lr, config.optim.warmup, config.model.ema_rate = 0.1, 3, 0.15
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=5)
  batches = [rng.normal(size=(4, 5)) * s for s in (3.0, 0.1, 1.0, 2.0)]  # clipped or not
  state, step = _toy_state(config, w0), _jit_step(config)
  for k, (x, (w, ema, norm, lr)) in enumerate(zip(
      batches, _numpy_reference(w0, batches, config))):
    state, metrics = step(state, {'image': jnp.asarray(x, jnp.float32)})
    assert int(state.step) == k + 1
    np.testing.assert_allclose(state.params['w'], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.ema_params['w'], ema, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics['grad_norm'], norm, rtol=1e-5)
    np.testing.assert_allclose(metrics['lr'], lr, rtol=1e-6)
  assert set(metrics) == {'loss', 'grad_norm', 'lr'}  # per-example aux is not a metric


def test_ema_reaches_the_configured_rate_after_its_warm_up():
  # With lr 0 the parameters stay put, so the EMA of a shifted start decays by exactly
  # the product of the decays: (1 + k) / (10 + k) until that exceeds ema_rate = 0.5.
  config = ctm.get_config('test')
  config.optim.lr, config.model.ema_rate = 0.0, 0.5
  state = _toy_state(config, np.zeros(3))
  state = state.replace(ema_params={'w': jnp.ones(3, jnp.float32)})
  step = _jit_step(config)
  gap = 1.0
  for k in range(12):
    state, _ = step(state, {'image': jnp.ones((2, 3), jnp.float32)})
    gap *= min(0.5, (1 + k) / (10 + k))
    np.testing.assert_allclose(state.ema_params['w'], gap, rtol=1e-5)
    np.testing.assert_array_equal(state.params['w'], 0.0)
  assert gap < 0.5**3  # the rate, not the warm-up, decided the last steps


@pytest.mark.parametrize('lr, warmup', [(2e-4, 5), (1e-3, 1)])
def test_learning_rate_schedule_is_linear_warmup(lr, warmup):
  config = ctm.get_config('test')
  config.optim.lr, config.optim.warmup = lr, warmup
  schedule = ts.learning_rate_schedule(config)
  got = [float(schedule(c)) for c in range(8)]
  np.testing.assert_allclose(got, [lr * min((c + 1) / warmup, 1) for c in range(8)],
                             rtol=1e-6)


def test_learning_rate_schedule_without_warmup_is_constant():
  config = ctm.get_config('test')
  config.optim.lr, config.optim.warmup = 3e-4, 0
  schedule = ts.learning_rate_schedule(config)
  np.testing.assert_allclose([float(schedule(c)) for c in (0, 1, 100)], [3e-4] * 3,
                             rtol=1e-7)


def test_step_k_draws_from_fold_in_of_the_state_key_and_aux_scalars_are_metrics():
  def loss(params, batch, rng, train_mode):
    del batch
    assert train_mode
    draw = jax.random.uniform(rng)
    return jnp.sum(params['w'] ** 2), {'draw': draw, 'vector': jnp.zeros(2)}

  config = ctm.get_config('test')
  state, step = _toy_state(config, np.ones(2)), _jit_step(config, loss)
  base = state.rng
  for k in range(3):
    state, metrics = step(state, {'image': jnp.zeros((1, 2))})
    assert set(metrics) == {'loss', 'grad_norm', 'lr', 'draw'}
    assert float(metrics['draw']) == float(
        jax.random.uniform(jax.random.fold_in(base, k)))
  np.testing.assert_array_equal(state.rng, base)  # the key itself never changes


def test_eval_step_scores_the_ema_parameters():
  config = ctm.get_config('test')
  state = _toy_state(config, np.zeros(2)).replace(ema_params={'w': jnp.array([1., 3.])})
  x = np.array([[0., 1.], [2., 1.]], np.float32)
  got = ts.eval_step(state, {'image': jnp.asarray(x)}, jax.random.PRNGKey(1),
                     loss_fn=_toy_loss)
  # 0.5 * mean(||(1,3) - (0,1)||^2, ||(1,3) - (2,1)||^2) = 0.5 * (5 + 5) / 2
  np.testing.assert_allclose(got['loss'], 2.5, rtol=1e-7)
  assert set(got) == {'loss'}


def test_make_sde_reads_the_config():
  config = ctm.get_config('test')
  sde = ts.make_sde(config)
  assert (sde.sigma_min, sde.sigma_max, sde.num_scales) == (
      config.sde.sigma_min, config.sde.sigma_max, config.sde.num_scales)


def test_init_train_state_is_create_train_state_of_the_seed_replicated():
  config = ctm.get_config('test')
  config.model.nf, config.model.ch_mult, config.model.attn_resolutions = 4, (1,), ()
  model = model_utils.create_model(config)
  mesh = parallel.make_mesh()
  state = ts.init_train_state(config, model, mesh)
  again = ts.create_train_state(config, jax.random.PRNGKey(config.seed), model)
  assert int(state.step) == 0
  for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(again)):
    np.testing.assert_array_equal(x, y)
    assert x.sharding.is_equivalent_to(parallel.replicated(mesh), x.ndim)
  # The EMA starts equal to the parameters but in its own buffers (both trees are donated).
  for p, e in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.ema_params)):
    np.testing.assert_array_equal(p, e)
    assert p.unsafe_buffer_pointer() != e.unsafe_buffer_pointer()
  # Parameters and the training key come from different halves of the seed's key.
  params_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
  np.testing.assert_array_equal(state.rng, train_key)
  assert not np.array_equal(state.rng, params_key)
