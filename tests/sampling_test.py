"""Samplers checked with the exact score of Gaussian data.

For data N(m, s^2 I) the VE-perturbed marginal at noise level sigma is N(m, (s^2 +
sigma^2) I), so the exact score is -(x - m) / (s^2 + sigma^2). For that score every step
of the PC sampler is linear, and the per-dimension mean offset delta = E[x] - m and the
variance v follow a closed recursion (float64, `_moments` below):
  predictor, A = s^2 + sigma_i^2, var = sigma_i^2 - sigma_{i+1}^2, a = 1 - var / A:
      delta <- a delta,  v <- a^2 v + var   (the returned last mean gets no + var);
  Langevin step e:  b = 1 - e / A,  delta <- b delta,  v <- b^2 v + 2 e,
  with the batch-wide e = 2 r^2 E||z||^2 / E||s||^2 = 2 r^2 A^2 / (v + mean_j delta_j^2)
  (means of norms over 16384 numbers: their ratio is this to O(1/d^2)).
That recursion is the sampler's discretisation bias (at snr 0.4 the Langevin steps
inflate the final std by about 6 % over s), so samples are compared with it, and the
remaining tolerance is statistical: a sample std over n numbers has a standard error
std / sqrt(2 n), a mean std / sqrt(n); we allow 5 standard errors.
"""
import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from score_sde_knee import sampler_setting
from score_sde_knee import sampling
from score_sde_knee import sde as sde_lib
from score_sde_knee.sampler_setting import SamplerSettings
import helpers
from helpers import SDE, Z_TOL

N = 500        # The paper's step count: the bias checked is the one that matters.
S = 0.06       # Data std: mean +- 5 std stays inside [0, 1], so clipping is negligible.
_means = helpers.means


# The exact score of the test data N(m, S^2 I); s= and sde= override.
gaussian_score = functools.partial(helpers.gaussian_score, s=S, sde=SDE)


def _moments(t_start, n_steps, snr, order, v0, delta0, n_corrector=1, s=S, sde=SDE,
             eps=1e-5, predictor='reverse_diffusion', t_jump=1.0):
  """Float64 mean offset (per dimension) and variance of the returned sample.

  The ancestral predictor adds var sigma_{i+1}^2 / sigma_i^2 instead of var. With t_jump <
  t_start the grid is t_start, then N - 1 times evenly from t_jump to eps.
  """
  ts = np.linspace(t_start, eps, n_steps)
  if t_jump < t_start:
    ts = np.concatenate([[t_start], np.linspace(t_jump, eps, n_steps - 1)])
  sig = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** ts
  sig_next = np.append(sig[1:], 0.0)
  v, delta = float(v0), np.asarray(delta0, np.float64).reshape(-1)
  for i in range(n_steps):
    big_a = s**2 + sig[i] ** 2
    skip = order == 'predictor_first' and i == 0
    for _ in range(0 if skip or snr == 0 else n_corrector):
      e = 2 * snr**2 * big_a**2 / (v + np.mean(delta**2))
      b = 1 - e / big_a
      delta, v = b * delta, b * b * v + 2 * e
    var = sig[i] ** 2 - sig_next[i] ** 2
    a = 1 - var / big_a
    added = var * (sig_next[i] / sig[i]) ** 2 if predictor == 'ancestral' else var
    delta, v = a * delta, a * a * v + (added if i < n_steps - 1 else 0.0)
  return delta, np.sqrt(v)


def _check_moments(x, m, delta_pred, std_pred):
  """x (B, ...) against per-dimension mean m + delta_pred and std std_pred."""
  dev = np.asarray(x, np.float64).reshape(x.shape[0], -1) - np.reshape(m, -1)
  b, n = dev.shape[0], dev.size
  # Per-dimension means (B examples each): the score's m (and CSM's start) must show.
  np.testing.assert_allclose(dev.mean(0), delta_pred, atol=Z_TOL * std_pred / np.sqrt(b))
  # Pooled over all numbers: a tight check of the mean and the spread.
  centred = dev - delta_pred
  assert abs(centred.mean()) < Z_TOL * std_pred / np.sqrt(n)
  assert abs(centred.std() / std_pred - 1) < Z_TOL / np.sqrt(2 * n)


@pytest.mark.parametrize('order', sampler_setting.ORDERS)
def test_ctm_recovers_gaussian(order):
  batch, shape = 256, (4, 4, 4)  # n = 16384: std known to 0.55 %.
  m = _means(shape)
  cond = jnp.zeros((batch, 4, 4, 1))
  sample = jax.jit(lambda c, r: sampling.ctm_sample(
      gaussian_score(m), SDE, c, r, SamplerSettings(n_steps=N, snr=0.4, order=order),
      channels=4))
  x = sample(cond, jax.random.key(0))
  assert x.shape == (batch, 4, 4, 4)
  delta, std = _moments(1.0, N, 0.4, order, SDE.sigma_max**2, -m)
  assert 1.04 * S < std < 1.08 * S  # The Langevin bias at snr 0.4, stated above.
  _check_moments(x, m, delta, std)


@pytest.mark.parametrize('snr', [0.0, 0.4])
def test_ancestral_predictor_on_a_coarse_grid(snr):
  # N = 10 on sigma 0.01..5: sigma halves each step. Reverse diffusion leaves too much
  # noise (std 1.46 S from the recursion, 1.16 S with the corrector); the ancestral step,
  # exact for point data, removes a little too much for data with spread (0.73 S), which
  # the corrector makes up (1.04 S, as at N = 500).
  batch, shape, n = 256, (4, 4, 4), 10
  m = _means(shape)
  cond = jnp.zeros((batch, 4, 4, 1))
  sample = jax.jit(lambda c, r: sampling.ctm_sample(
      gaussian_score(m), SDE, c, r, SamplerSettings(n_steps=n, snr=snr, predictor='ancestral'),
      channels=4))
  delta, std = _moments(1.0, n, snr, 'predictor_first', SDE.sigma_max**2, -m,
                        predictor='ancestral')
  _check_moments(sample(cond, jax.random.key(3)), m, delta, std)
  _, std_rd = _moments(1.0, n, snr, 'predictor_first', SDE.sigma_max**2, -m)
  assert abs(std / S - 1) < abs(std_rd / S - 1) - 0.1  # the point of the ancestral step
  assert snr == 0 or abs(std / S - 1) < 0.06


@pytest.mark.parametrize('snr', [0.0, 0.4])
def test_ancestral_jump_skips_the_empty_levels(snr):
  # N = 10 with the first step jumping from sigma 5 to sigma(0.5) = 0.22 (3.7 S): at that
  # noise the denoiser of N(m, S^2) is nearly constant, so the ancestral step over the jump
  # stays exact; without the corrector the 9 finer levels (sigma ratio 0.63 instead of 0.5)
  # end nearer S, with it both stay within the corrector's few-percent bias. The
  # reverse-diffusion step over the same jump keeps about sigma_jump of noise.
  batch, shape, n, jump = 256, (4, 4, 4), 10, 0.5
  m = _means(shape)
  cond = jnp.zeros((batch, 4, 4, 1))
  sample = jax.jit(lambda c, r: sampling.ctm_sample(
      gaussian_score(m), SDE, c, r,
      SamplerSettings(n_steps=n, snr=snr, predictor='ancestral', t_jump=jump), channels=4))
  moments = functools.partial(_moments, 1.0, n, snr, 'predictor_first', SDE.sigma_max**2,
                              -m)
  delta, std = moments(predictor='ancestral', t_jump=jump)
  _check_moments(sample(cond, jax.random.key(4)), m, delta, std)
  _, std_plain = moments(predictor='ancestral')
  if snr == 0:
    assert abs(std / S - 1) < abs(std_plain / S - 1)
  else:
    assert abs(std / S - 1) < 0.06
  _, std_rd = moments(t_jump=jump)
  assert std_rd > 2 * S


def test_ctm_per_sample_step_recovers_gaussian():
  # Per-example step sizes are random and correlated with each example's distance to m
  # (E[1/||s||^2] = d / (d - 2) / E[||s||^2]): that inflates the std by about 2/d beyond
  # the recursion (measured 2.9 % at d = 64, 0.6 % at d = 256). d = 256 with a 3/d
  # allowance on top of the statistical one.
  batch, shape = 64, (16, 16, 1)
  d = int(np.prod(shape))
  m = _means(shape)
  x = jax.jit(lambda c, r: sampling.ctm_sample(
      gaussian_score(m), SDE, c, r, SamplerSettings(n_steps=N, per_sample_step=True)))(
          jnp.zeros((batch,) + shape), jax.random.key(1))
  delta, std = _moments(1.0, N, 0.4, 'predictor_first', SDE.sigma_max**2, -m)
  dev = np.asarray(x, np.float64).reshape(batch, -1) - m.reshape(-1)
  assert abs(dev.mean()) < Z_TOL * std / np.sqrt(dev.size)
  assert abs(dev.std() / std - 1) < Z_TOL / np.sqrt(2 * dev.size) + 3 / d


@pytest.mark.parametrize('t0,n_corrector', [(1.0, 1), (0.4, 0)])
def test_csm_matches_gaussian_posterior(t0, n_corrector):
  # Start: a two-level "contour" y, perturbed to sigma(t0). At t0 = 1 it is forgotten
  # (the target is N(m, s^2)). At t0 = 0.4 the predictor keeps s^2 / (s^2 + sigma(t0)^2)
  # = 0.2 of y - m; Langevin steps at snr 0.4 would mix this toy Gaussian completely
  # (each contracts y - m by ~0.7), so that case runs the predictor alone.
  batch, shape = 256, (4, 4, 4)
  m = _means(shape)
  y = np.where(np.arange(m.size).reshape(shape) % 3 == 0, 0.3, 0.7).astype(np.float32)
  x = jax.jit(lambda c, r: sampling.csm_sample(
      gaussian_score(m), SDE, c, r, SamplerSettings(t0=t0, n_steps=N, n_steps_each=n_corrector)))(
      jnp.broadcast_to(y, (batch,) + shape), jax.random.key(2))
  delta, std = _moments(t0, N, 0.4, 'predictor_first', float(SDE.sigma(t0)) ** 2, y - m,
                        n_corrector=n_corrector)
  if t0 < 1:
    assert np.abs(delta).max() > 0.05  # y must still be visible, else the test is weak.
  _check_moments(x, m, delta, std)


def test_csm_tiny_t0_returns_its_input():
  # Predictor only: the Langevin corrector at t ~ 0 samples the data distribution itself,
  # which for this broad toy Gaussian (s = 0.5) moves points by O(s). From t0 = 1e-4 the
  # reverse SDE adds sigma(t0)^2 - sigma(eps)^2 ~ 1e-8 of variance and pulls by
  # sigma^2 / s^2 ~ 4e-4 of (y - m): the result is y + sigma(t0) z.
  batch, shape, t0 = 64, (8, 8, 1), 1e-4
  y = np.where(np.arange(64).reshape(shape) % 2 == 0, 0.25, 0.75).astype(np.float32)
  x = jax.jit(lambda c, r: sampling.csm_sample(
      gaussian_score(0.5, s=0.5), SDE, c, r, SamplerSettings(t0=t0, n_steps=50, n_steps_each=0)))(
      jnp.broadcast_to(y, (batch,) + shape), jax.random.key(3))
  dev = np.asarray(x, np.float64) - y
  sigma0 = float(SDE.sigma(t0))
  assert abs(dev.std() / sigma0 - 1) < Z_TOL / np.sqrt(2 * dev.size) + 1e-3
  assert np.abs(dev).max() < 6 * sigma0


def test_ctm_starts_from_the_prior_sample():
  # One predictor step with a zero score returns its start: sde.prior_sampling's draw.
  sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=0.3, num_scales=1)
  cond, rng = jnp.zeros((4, 8, 8, 1)), jax.random.key(4)
  got = jax.jit(lambda c, r: sampling.ctm_sample(lambda x, t, c: jnp.zeros_like(x), sde, c, r,
                                                 SamplerSettings(n_steps=1), channels=2))(
                                                     cond, rng)
  want = sde.prior_sampling(jax.random.split(rng)[0], (4, 8, 8, 2))
  np.testing.assert_allclose(np.asarray(got), np.clip(np.asarray(want), 0, 1), atol=1e-7)
  assert 0.2 < np.mean(np.asarray(got) > 0) < 0.8


def test_same_key_same_output_other_key_differs():
  m = _means((4, 4, 1))
  sample = jax.jit(lambda c, r: sampling.ctm_sample(gaussian_score(m), SDE, c, r,
                                                    SamplerSettings(n_steps=20)))
  cond = jnp.zeros((8, 4, 4, 1))
  a, b = sample(cond, jax.random.key(5)), sample(cond, jax.random.key(5))
  c = sample(cond, jax.random.key(6))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.abs(np.asarray(a) - np.asarray(c)).mean() > 0.01


@pytest.mark.parametrize('order,per_sample,snr,n_corrector', [
    ('predictor_first', False, 0.0, 1),  # snr = 0: the predictor alone.
    ('predictor_first', False, 0.4, 2),
    ('corrector_first', False, 0.4, 2),
    ('corrector_first', True, 0.4, 1)])
def test_pc_sample_matches_float64_reference(order, per_sample, snr, n_corrector):
  sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=2.0, num_scales=7)
  m, s = 0.3, 0.2
  rng = jax.random.key(7)
  x0 = np.asarray(jax.random.normal(jax.random.key(8), (3, 2, 2, 1))) * 2.0
  settings = SamplerSettings(n_steps=7, snr=snr, n_steps_each=n_corrector, order=order,
                             per_sample_step=per_sample)
  got = sampling.pc_sample(helpers.gaussian_score(m, s, sde), sde, jnp.asarray(x0), None, rng,
                           settings)
  want = helpers.reference_pc(x0, m, s, sde, rng, 7, snr, n_corrector if snr else 0, order,
                       per_sample)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
  if snr:  # The two orders must differ, else this test could not tell them apart.
    other = 'corrector_first' if order == 'predictor_first' else 'predictor_first'
    alt = helpers.reference_pc(x0, m, s, sde, rng, 7, snr, n_corrector, other, per_sample)
    assert np.abs(alt - want).max() > 1e-3


def test_get_sampler_passes_config_fields(monkeypatch):
  calls = []
  record = lambda name: lambda *args, **kwargs: calls.append((name, args, kwargs))
  monkeypatch.setattr(sampling, 'ctm_sample', record('ctm'))
  monkeypatch.setattr(sampling, 'csm_sample', record('csm'))
  score_fn, cond, rng = gaussian_score(0.5), jnp.zeros((2, 8, 8, 1)), jax.random.key(9)
  for method in ('ctm', 'csm'):
    config = default_config.get_config('test', method=method)
    config.sde.num_scales = 6
    config.sampling.update(snr=0.3, n_steps_each=2, order='corrector_first',
                           per_sample_step=True, t0=0.5, eps=1e-3, t_jump=0.7,
                           precond=0.2, precond_width=3.0, momentum=0.6, known_air=True,
                           air_margin=2)
    sampling.get_sampler(config, score_fn=score_fn)(cond, rng)
    name, (fn, sde, c, r, settings), kwargs = calls[-1]
    assert name == method and fn is score_fn and c is cond and r is rng and not kwargs
    assert sde == sde_lib.VESDE(0.01, float(config.sde.sigma_max), 6)
    assert settings == SamplerSettings(
        n_steps=6, snr=0.3, n_steps_each=2, order='corrector_first', per_sample_step=True,
        t0=0.5, eps=1e-3, predictor='reverse_diffusion', t_jump=0.7, precond=0.2,
        precond_width=3.0, momentum=0.6, known_air=True, air_margin=2)
  config = default_config.get_config('test', method='unet')
  unet = sampling.get_sampler(config, predict_fn=lambda c: 3.0 * c - 0.5)
  cond = jnp.linspace(0, 1, 16).reshape(1, 4, 4, 1)
  np.testing.assert_allclose(np.asarray(unet(cond, rng)), np.clip(3 * np.asarray(cond) - 0.5, 0, 1))


def test_bad_arguments_raise():
  config = default_config.get_config('test', method='ctm')
  with pytest.raises(ValueError, match='score_fn'):
    sampling.get_sampler(config)
  config.sampling.order = 'sideways'
  with pytest.raises(ValueError, match='order'):
    sampling.get_sampler(config, score_fn=gaussian_score(0.5))
  config.method = 'gan'
  with pytest.raises(ValueError, match='config.method'):
    sampling.get_sampler(config, score_fn=gaussian_score(0.5))
  config = default_config.get_config('test', method='csm')
  config.sampling.update(t0=1e-6, eps=1e-5)  # Valid settings, but t0 lies below eps.
  with pytest.raises(ValueError, match='t_start'):
    sampling.get_sampler(config, score_fn=gaussian_score(0.5))
  with pytest.raises(ValueError, match='t_start'):
    sampling.csm_sample(gaussian_score(0.5), SDE, jnp.zeros((1, 2, 2, 1)), jax.random.key(0),
                        SamplerSettings(t0=1e-6))


_SHARDED_SCRIPT = textwrap.dedent('''
    import json, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from score_sde_knee import sampling, sde as sde_lib
    from score_sde_knee.sampler_setting import SamplerSettings as S
    assert jax.device_count() == 4, jax.devices()
    sde = sde_lib.VESDE(0.01, 5.0, 40)
    def score_fn(x, t, cond):  # Uses cond, so the condition's sharding matters.
      sigma = sde.sigma(t).reshape(-1, 1, 1, 1)
      return -(x - (0.3 + 0.4 * (cond if cond is not None else 0.5))) / (0.01 + sigma**2)
    cond = (jax.random.uniform(jax.random.key(1), (8, 8, 8, 1)) > 0.5).astype(jnp.float32)
    rng = jax.random.key(2)
    def both(c, r):  # The batch-wide corrector step in all; known air in CSM; FFTs and
      k1, k2, k3 = jax.random.split(r, 3)  # momentum in the last.
      return (sampling.ctm_sample(score_fn, sde, c, k1, S(n_steps=40)),
              sampling.csm_sample(score_fn, sde, 0.5 * c, k2, S(n_steps=40, known_air=True)),
              sampling.ctm_sample(score_fn, sde, c, k3, S(
                  n_steps=40, predictor='ancestral', t_jump=0.7, precond=2.0,
                  precond_width=2.0, momentum=0.7)))
    one = jax.jit(both)(jax.device_put(cond, jax.devices()[0]), rng)
    out = {}
    for axis_type in (AxisType.Auto, AxisType.Explicit):
      mesh = jax.make_mesh((4,), ('data',), axis_types=(axis_type,))
      four = jax.jit(both)(jax.device_put(cond, NamedSharding(mesh, P('data'))), rng)
      for name, a, b in zip(('ctm', 'csm', 'ctm_pre'), one, four):
        out[f'{name}_{axis_type.name}'] = dict(
            diff=float(np.abs(np.asarray(a) - np.asarray(b)).max()),
            spec0=b.sharding.spec[0], devices=len(b.sharding.device_set),
            shard=list(b.addressable_shards[0].data.shape), spread=float(np.asarray(a).std()))
    print(json.dumps(out))
''')


def test_four_device_sharded_equals_one_device():
  # The device count is fixed when JAX starts: a fresh process with 4 host devices.
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu', PYTHONPATH=root)
  proc = subprocess.run([sys.executable, '-c', _SHARDED_SCRIPT], env=env, cwd=root,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(proc.stdout.strip().splitlines()[-1])
  assert len(results) == 6
  for name, r in results.items():
    # The sharding of the condition propagates to the samples: no gather to one device.
    assert r['spec0'] == 'data', (name, r)
    assert r['devices'] == 4 and r['shard'] == [2, 8, 8, 1], (name, r)
    assert r['spread'] > 0.05, (name, r)  # Non-trivial samples.
    # Only the order of the batch-mean reduction may differ: float32 round-off.
    assert r['diff'] < 1e-5, (name, r)
