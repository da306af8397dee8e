"""Tests of the config -> model dispatch, parameter init and the score/predict functions."""
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_knee import methods
from score_sde_knee import model_utils
from score_sde_knee import sde as sde_lib

_FAST = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else None


def _config(method, arg='test'):
  return importlib.import_module(f'configs.{method}').get_config(arg)


@pytest.mark.parametrize('method,in_ch,conditional', [
    ('csm', 1, True), ('ctm', 2, True), ('unet', 1, False)])
def test_create_model_and_init_params(method, in_ch, conditional):
  config = _config(method)
  model = model_utils.create_model(config)
  assert model.noise_conditioned == conditional
  assert model.out_channels == 1
  assert model.nf == config.model.nf and model.ch_mult == tuple(config.model.ch_mult)
  shapes = jax.eval_shape(lambda r: model_utils.init_params(model, r, config),
                          jax.random.key(0))
  # The first 3x3 conv sees the network input: its kernel fixes the input channel count.
  assert shapes['Conv_0']['kernel'].shape == (3, 3, in_ch, config.model.nf)
  assert ('GaussianFourierProjection_0' in shapes) == conditional
  assert model_utils.count_params(shapes) > 10_000


_PARAMS = {}


def _model_and_params(method):
  """Initialised once per method for the whole module (init compiles a large program)."""
  config = _config(method)
  model = model_utils.create_model(config)
  if method not in _PARAMS:
    _PARAMS[method] = model_utils.init_params(model, jax.random.key(0), config)
  return config, model, _PARAMS[method]


def test_init_params_real_arrays_match_eval_shape():
  config, model, params = _model_and_params('ctm')
  shapes = jax.eval_shape(lambda r: model_utils.init_params(model, r, config),
                          jax.random.key(0))
  assert jax.tree.structure(params) == jax.tree.structure(shapes)
  assert all(a.shape == b.shape and a.dtype == b.dtype
             for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(shapes)))


def test_count_params():
  tree = {'a': jnp.zeros((2, 3)), 'b': {'c': jnp.zeros((4,)), 'd': jnp.zeros((1, 1, 5))}}
  assert model_utils.count_params(tree) == 6 + 4 + 5


@pytest.mark.parametrize('method', ['csm', 'ctm', 'unet'])
def test_real_model_output_shapes(method):
  config, model, params = _model_and_params(method)
  x = jnp.full((3, 16, 16, 1), 0.5)
  cond = jnp.zeros((3, 16, 16, 1))
  if method == 'unet':
    fn = jax.jit(lambda p, c: model_utils.get_predict_fn(model)(p, c), compiler_options=_FAST)
    out = fn(params, cond)
  else:
    sde = sde_lib.VESDE(config.sde.sigma_min, config.sde.sigma_max, config.sde.num_scales)
    score_fn = model_utils.get_score_fn(model, sde, methods.get(method))
    fn = jax.jit(lambda p, x, t, c: score_fn(p, x, t, c), compiler_options=_FAST)
    out = fn(params, x, jnp.asarray([1e-5, 0.5, 1.0]), cond)
  assert out.shape == (3, 16, 16, 1) and out.dtype == jnp.float32
  assert np.all(np.isfinite(out))


class _FakeNet(nn.Module):
  """Known output: 10 * (last input channel) + sigma + first channel."""
  noise_conditioned: bool = True

  @nn.compact
  def __call__(self, x, sigma, train=False):
    del train
    out = 10.0 * x[..., -1:] + x[..., :1]
    return out + sigma[:, None, None, None] if self.noise_conditioned else out


def _fake_inputs():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(2, 4, 4, 1)).astype(np.float32)
  cond = rng.choice([0.0, 0.5, 1.0], size=(2, 4, 4, 1)).astype(np.float32)
  t = np.asarray([0.1, 0.9], np.float32)
  return x, cond, t


def test_score_fn_ctm_concatenates_cond_and_uses_sigma_of_t():
  sde = sde_lib.VESDE(0.01, 128.0)
  x, cond, t = _fake_inputs()
  score = model_utils.get_score_fn(_FakeNet(), sde, methods.CTM, scale_by_sigma=False)(
      {}, x, t, cond)
  sigma = 0.01 * (128.0 / 0.01) ** t.astype(np.float64)
  expected = 10.0 * cond + x + sigma[:, None, None, None]
  np.testing.assert_allclose(score, expected, rtol=1e-5)


def test_score_fn_divides_the_network_output_by_sigma():
  # The VE parametrisation (config.model.scale_by_sigma): score = F(x, sigma) / sigma.
  sde = sde_lib.VESDE(0.01, 128.0)
  x, cond, t = _fake_inputs()
  score = model_utils.get_score_fn(_FakeNet(), sde, methods.CTM)({}, x, t, cond)
  sigma = 0.01 * (128.0 / 0.01) ** t.astype(np.float64)
  expected = (10.0 * cond + x + sigma[:, None, None, None]) / sigma[:, None, None, None]
  np.testing.assert_allclose(score, expected, rtol=1e-5)


def test_score_fn_csm_ignores_cond():
  sde = sde_lib.VESDE(0.01, 128.0)
  x, cond, t = _fake_inputs()
  score_fn = model_utils.get_score_fn(_FakeNet(), sde, methods.CSM, scale_by_sigma=False)
  sigma = 0.01 * (128.0 / 0.01) ** t.astype(np.float64)
  expected = 11.0 * x + sigma[:, None, None, None]
  np.testing.assert_allclose(score_fn({}, x, t, cond), expected, rtol=1e-5)
  np.testing.assert_allclose(score_fn({}, x, t, None), expected, rtol=1e-5)


def test_predict_fn_feeds_the_condition():
  _, cond, _ = _fake_inputs()
  out = model_utils.get_predict_fn(_FakeNet(noise_conditioned=False))({}, cond)
  np.testing.assert_allclose(out, 11.0 * cond, rtol=1e-6)


def test_dispatch_errors():
  sde = sde_lib.VESDE()
  config = _config('ctm')
  config.method = 'gan'
  with pytest.raises(ValueError, match='config.method'):
    model_utils.create_model(config)
  with pytest.raises(ValueError, match="config.method='gan': expected one of"):
    model_utils.init_params(model_utils.create_model(_config('ctm')), jax.random.key(0),
                            config)
  with pytest.raises(ValueError, match="'unet' has no score"):
    model_utils.get_score_fn(_FakeNet(), sde, methods.UNET)
  with pytest.raises(ValueError, match='noise_conditioned=False'):
    model_utils.get_predict_fn(_FakeNet(noise_conditioned=True))
  x, _, t = _fake_inputs()
  with pytest.raises(ValueError, match="'ctm' needs cond"):
    model_utils.get_score_fn(_FakeNet(), sde, methods.CTM)({}, x, t, None)


@pytest.mark.parametrize('arg,lo,hi', [('test', 2e4, 1e5), ('cpu', 2e5, 5e6), ('', 1e7, 6e7)])
def test_parameter_counts_per_scale(arg, lo, hi):
  for method in ('csm', 'ctm', 'unet'):
    config = _config(method, arg)
    model = model_utils.create_model(config)
    shapes = jax.eval_shape(lambda r: model_utils.init_params(model, r, config),
                            jax.random.key(0))
    n = model_utils.count_params(shapes)
    print(f'{method} {arg or "paper"}: {n:,} parameters')
    assert lo < n < hi


def test_bfloat16_compute_keeps_float32_parameters_and_fourier_features():
  config = _config('ctm')
  config.model.init_scale = 1.0  # 0 zeroes the output convolution: nothing to compare
  model = model_utils.create_model(config)
  params = model_utils.init_params(model, jax.random.key(0), config)
  cast = model_utils.cast_params(params, 'bfloat16')
  assert cast['GaussianFourierProjection_0']['W'].dtype == jnp.float32
  assert cast['Conv_0']['kernel'].dtype == jnp.bfloat16
  sde = sde_lib.VESDE(0.01, 8.0, 4)
  fns = {d: model_utils.get_score_fn(model, sde, methods.CTM, d)
         for d in ('float32', 'bfloat16')}
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
  cond = jnp.round(jax.random.uniform(jax.random.key(2), (2, 16, 16, 1)) * 2) / 2
  t = jnp.array([0.05, 0.9])
  # Jitted: op-by-op bfloat16 dispatch on XLA:CPU made this test take minutes.
  ref, low = (jax.jit(fns[d])(params, x, t, cond) for d in ('float32', 'bfloat16'))
  assert low.dtype == jnp.float32
  rel = float(jnp.linalg.norm(low - ref) / jnp.linalg.norm(ref))
  assert 1e-5 < rel < 3e-2, rel  # bfloat16-sized differences: rounded, not garbage
  # The convolutions really run in bfloat16, and the gradient is float32 like the params.
  jaxpr = str(jax.make_jaxpr(lambda p: fns['bfloat16'](p, x, t, cond))(params))
  assert 'conv_general_dilated' in jaxpr and 'bf16[2,16,16,8]' in jaxpr
  grads = jax.jit(jax.grad(lambda p: jnp.sum(fns['bfloat16'](p, x, t, cond))))(params)
  assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
