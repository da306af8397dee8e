"""PF-ODE samplers checked against the exact solution for Gaussian data.

For data N(m, s^2 I) the VE-perturbed score is -(x - m) / (s^2 + sigma^2), and the
probability-flow ODE dx/dsigma = -sigma score = sigma (x - m) / (s^2 + sigma^2) is linear
with the exact solution
    x(sigma) = m + (x(sigma_a) - m) sqrt((s^2 + sigma^2) / (s^2 + sigma_a^2)).
The samplers integrate it from sigma_a down to sigma_lo and then take EDM's last Euler
step to 0, x + sigma_lo^2 score = m + (x - m) s^2 / (s^2 + sigma_lo^2): `_exact` below is
that composition in float64, the independent reference. Each solver step multiplies
x - m by a number, so a sample's error is a fixed fraction of its exact x - m: a second
order method with N steps is off by C / N^2 of it (measured: Heun 5.1 % at N = 18,
sigma_max = 50, s = 0.2; DPM-Solver-2 2.9 %); statistical checks allow 5 standard errors
(a std over n numbers has a standard error std / sqrt(2 n)).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from score_sde_knee import ode_sampling
from score_sde_knee import sampler_setting
from score_sde_knee import sampling
from score_sde_knee import sde as sde_lib
from score_sde_knee.sampler_setting import SamplerSettings
import helpers

SDE = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, num_scales=500)
Z_TOL = 5.0  # Standard errors allowed.


gaussian_score = functools.partial(helpers.gaussian_score, sde=SDE)


def _ode(**fields) -> SamplerSettings:
  """Settings of EDM's deterministic Heun sampler (18 levels) with `fields` changed."""
  return SamplerSettings(**{'solver': 'heun', 'n_steps': 18, **fields})


def _exact(x_a, m, s, sigma_a, sigma_lo):
  """Float64: the exact ODE solution from sigma_a to sigma_lo, then the Euler step to 0."""
  x_a = np.asarray(x_a, np.float64)
  x_lo = m + (x_a - m) * np.sqrt((s**2 + sigma_lo**2) / (s**2 + sigma_a**2))
  return m + (x_lo - m) * s**2 / (s**2 + sigma_lo**2)


def _means(shape, lo=0.35, hi=0.65):
  return np.linspace(lo, hi, int(np.prod(shape)), dtype=np.float32).reshape(shape)


def _run_ode(x0, m, s, n_steps, solver, sigma_lo=None):
  fn = jax.jit(lambda x: ode_sampling.ode_sample(
      gaussian_score(m, s), SDE, x, None, jax.random.key(0),
      _ode(n_steps=n_steps, solver=solver), sigma_lo=sigma_lo))
  return np.asarray(fn(jnp.asarray(x0)), np.float64)


@pytest.mark.parametrize('solver,tol,sigma_lo', [
    ('heun', 0.07, None), ('dpm2', 0.04, None), ('heun', 0.07, 0.002)])
def test_ode_sample_matches_exact_solution(solver, tol, sigma_lo):
  m, s = _means((4, 4, 1), 0.3, 0.7), 0.2
  x0 = SDE.sigma_max * np.asarray(jax.random.normal(jax.random.key(1), (16, 4, 4, 1)))
  got = _run_ode(x0, m, s, 18, solver, sigma_lo=sigma_lo)
  want = _exact(x0, m, s, SDE.sigma_max, sigma_lo or SDE.sigma_min)
  # tol: the C / N^2 bound of the module docstring; 1e-5 sigma_max: float32 round-off of x0.
  assert np.all(np.abs(got - want) <= tol * np.abs(want - m) + 1e-5 * SDE.sigma_max)
  assert np.abs(got - want).max() < 0.05  # And small in image units (want - m ~ 0.2).


@pytest.mark.parametrize('solver', ode_sampling.SOLVERS)
def test_one_step_is_the_denoiser(solver):
  # N = 1: only the last Euler step, from sigma(t_start) straight to 0. For this score it
  # is the posterior mean E[x_0 | x] = m + (x - m) s^2 / (s^2 + sigma^2) (EDM's D).
  m, s, t_start = 0.4, 0.05, 0.3
  sigma = float(SDE.sigma(t_start))
  x0 = m + sigma * np.asarray(jax.random.normal(jax.random.key(10), (4, 4, 4, 1)))
  got = ode_sampling.ode_sample(gaussian_score(m, s), SDE, jnp.asarray(x0), None,
                                jax.random.key(0), _ode(n_steps=1, solver=solver),
                                t_start=t_start)
  want = m + (x0 - m) * s**2 / (s**2 + sigma**2)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('solver', ode_sampling.SOLVERS)
def test_error_shrinks_fourfold_when_steps_double(solver):
  m, s = _means((4, 4, 1), 0.3, 0.7), 0.2
  x0 = SDE.sigma_max * np.asarray(jax.random.normal(jax.random.key(2), (16, 4, 4, 1)))
  want = _exact(x0, m, s, SDE.sigma_max, SDE.sigma_min)
  errs = [np.abs(_run_ode(x0, m, s, n, solver) - want).max() for n in (18, 36, 72)]
  ratios = [errs[0] / errs[1], errs[1] / errs[2]]
  # Second order: 4x per doubling (measured 4.5 then 4.1, approaching 4 from above).
  assert all(3.5 < r < 5.5 for r in ratios), (errs, ratios)


@pytest.mark.parametrize('solver,churn', [
    ('heun', {}), ('dpm2', {}), ('heun', dict(s_churn=40.0, s_tmin=0.02, s_tmax=20.0))])
def test_ctm_recovers_gaussian(solver, churn):
  batch, shape, s, n_steps = 256, (4, 4, 4), 0.06, 36  # n = 16384: std known to 0.55 %.
  m = _means(shape)  # m +- 5 s stays inside [0, 1]: clipping is negligible.
  cond, rng = jnp.zeros((batch, 4, 4, 1)), jax.random.key(3)
  x = jax.jit(lambda c, r: ode_sampling.ode_ctm_sample(
      gaussian_score(m, s), SDE, c, r, _ode(n_steps=n_steps, solver=solver, **churn),
      channels=4))(cond, rng)
  assert x.shape == (batch,) + shape
  x = np.asarray(x, np.float64)
  # The exact endpoint of x0 ~ N(0, sigma_max^2): mean m - m F, std sigma_max F.
  factor = _exact(1.0, 0.0, s, SDE.sigma_max, SDE.sigma_min)
  std = SDE.sigma_max * factor
  dev = (x - m).reshape(batch, -1) + m.reshape(-1) * factor
  np.testing.assert_allclose(dev.mean(0), 0.0, atol=Z_TOL * std / np.sqrt(batch))
  assert abs(dev.mean()) < Z_TOL * std / np.sqrt(dev.size)
  # Discretisation at N = 36 (the 1/N^2 bound above, larger with churn) + statistics.
  assert abs(dev.std() / std - 1) < 0.07 + Z_TOL / np.sqrt(2 * dev.size)
  assert abs(std / s - 1) < 0.02  # The exact endpoint is the data's s (to sigma_lo / s).
  if not churn:  # Deterministic: each sample is the exact image of its prior draw.
    x0 = SDE.sigma_max * np.asarray(jax.random.normal(jax.random.split(rng)[0], x.shape))
    want = np.clip(_exact(x0, m, s, SDE.sigma_max, SDE.sigma_min), 0, 1)
    assert np.all(np.abs(x - want) <= 0.03 * np.abs(want - m) + 1e-4)


@pytest.mark.parametrize('solver', ode_sampling.SOLVERS)
def test_csm_matches_exact_solution(solver):
  batch, shape, t0, m, s = 32, (4, 4, 1), 0.4, 0.5, 0.1
  y = np.where(np.arange(16).reshape(shape) % 3 == 0, 0.3, 0.7).astype(np.float32)
  rng = jax.random.key(4)
  x = jax.jit(lambda c, r: ode_sampling.ode_csm_sample(
      gaussian_score(m, s), SDE, c, r, _ode(t0=t0, solver=solver)))(
          jnp.broadcast_to(y, (batch,) + shape), rng)
  sigma0 = float(SDE.sigma(t0))
  x0 = y + sigma0 * np.asarray(jax.random.normal(jax.random.split(rng)[0], x.shape))
  want = _exact(x0, m, s, sigma0, SDE.sigma_min)
  # y - m = +-0.2 keeps s / sqrt(s^2 + sigma0^2) = 0.32 of itself: the contour shows.
  assert np.mean((want - m) * np.sign(y - m)) > 0.04
  want = np.clip(want, 0, 1)
  assert np.all(np.abs(np.asarray(x) - want) <= 0.05 * np.abs(want - m) + 1e-4)


def test_csm_tiny_t0_returns_its_input():
  # From sigma(1e-4) = 1.0009 sigma_min the ODE barely moves, and the last step pulls by
  # sigma_min^2 / s^2 = 4e-4 of x - m: the result is y + sigma(t0) z.
  batch, shape, t0 = 64, (8, 8, 1), 1e-4
  y = np.where(np.arange(64).reshape(shape) % 2 == 0, 0.25, 0.75).astype(np.float32)
  x = jax.jit(lambda c, r: ode_sampling.ode_csm_sample(
      gaussian_score(0.5, 0.5), SDE, c, r, _ode(t0=t0)))(
          jnp.broadcast_to(y, (batch,) + shape), jax.random.key(5))
  dev = np.asarray(x, np.float64) - y
  sigma0 = float(SDE.sigma(t0))
  assert abs(dev.mean()) < Z_TOL * sigma0 / np.sqrt(dev.size) + 1e-4
  assert abs(dev.std() / sigma0 - 1) < Z_TOL / np.sqrt(2 * dev.size) + 1e-3
  assert np.abs(dev).max() < 6 * sigma0


def test_same_key_same_output_other_key_differs():
  m = _means((4, 4, 1))
  cond = jnp.zeros((8, 4, 4, 1))
  sample = jax.jit(lambda c, r: ode_sampling.ode_ctm_sample(
      gaussian_score(m, 0.06), SDE, c, r, _ode(n_steps=10, s_churn=10.0)))
  a, b = sample(cond, jax.random.key(6)), sample(cond, jax.random.key(6))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.abs(np.asarray(a) - np.asarray(sample(cond, jax.random.key(7)))).mean() > 0.01
  # Without churn the loop key is unused: the ODE itself is deterministic.
  run = jax.jit(jax.vmap(lambda key: ode_sampling.ode_sample(
      gaussian_score(m, 0.06), SDE, jnp.full((2, 4, 4, 1), 3.0), None, key, _ode(n_steps=5))))
  a, b = np.asarray(run(jax.random.split(jax.random.key(0))))
  np.testing.assert_array_equal(a, b)


def _counting(score_fn, calls):
  def counted(x, t, cond):
    jax.debug.callback(lambda t: calls.append(1), t)
    return score_fn(x, t, cond)
  return counted


@pytest.mark.parametrize('method,order,snr', [
    ('heun', '', 0.4), ('dpm2', '', 0.4), ('pc', 'predictor_first', 0.4),
    ('pc', 'corrector_first', 0.4), ('pc', 'predictor_first', 0.0)])
def test_nfe_counts_score_evaluations(method, order, snr):
  for kind in ('ctm', 'csm') if method != 'pc' else ('ctm',):
    config = default_config.get_config('test', method=kind)
    config.sde.num_scales = 6
    config.sampling.update(method=method, ode_steps=5, snr=snr, n_steps_each=2,
                           order=order or 'predictor_first')
    calls = []
    sample = sampling.get_sampler(config, score_fn=_counting(gaussian_score(0.5, 0.2), calls))
    jax.block_until_ready(jax.jit(sample)(jnp.zeros((2, 4, 4, 1)), jax.random.key(8)))
    jax.effects_barrier()
    want = {'heun': 9, 'dpm2': 9}.get(method) or (
        6 if snr == 0 else 18 if order == 'corrector_first' else 16)
    assert len(calls) == want == sampler_setting.nfe(config), (kind, len(calls))
  config.method, config.sampling.ode_steps = 'unet', 18
  assert sampler_setting.nfe(config) == 1
  config.method, config.sampling.method = 'ctm', 'heun'
  assert sampler_setting.nfe(config) == 35  # EDM's 18 steps.


def test_get_sampler_passes_config_fields(monkeypatch):
  calls = []
  record = lambda name: lambda *args, **kwargs: calls.append((name, args, kwargs))
  monkeypatch.setattr(ode_sampling, 'ode_ctm_sample', record('ctm'))
  monkeypatch.setattr(ode_sampling, 'ode_csm_sample', record('csm'))
  score_fn, cond, rng = gaussian_score(0.5, 0.2), jnp.zeros((2, 8, 8, 1)), jax.random.key(9)
  for method in ('ctm', 'csm'):
    for solver in ode_sampling.SOLVERS:
      config = default_config.get_config('test', method=method)
      config.sampling.update(method=solver, ode_steps=7, rho=5.0, s_churn=1.5, s_tmin=0.1,
                             s_tmax=3.0, s_noise=1.01, t0=0.5)
      sampling.get_sampler(config, score_fn=score_fn)(cond, rng)
      name, (fn, sde, c, r, settings), kwargs = calls[-1]
      assert name == method and fn is score_fn and c is cond and r is rng and not kwargs
      assert sde == sde_lib.VESDE(0.01, float(config.sde.sigma_max), 4)
      assert settings == SamplerSettings(solver=solver, n_steps=7, rho=5.0, s_churn=1.5,
                                         s_tmin=0.1, s_tmax=3.0, s_noise=1.01, t0=0.5)


def test_bad_arguments_raise():
  config = default_config.get_config('test', method='ctm')
  score_fn = gaussian_score(0.5, 0.2)
  config.sampling.method = 'euler'
  for fn in (lambda: sampling.get_sampler(config, score_fn=score_fn),
             lambda: sampler_setting.nfe(config)):
    with pytest.raises(ValueError, match=r"solver='euler': expected one of \('pc', 'heun', "
                                         r"'dpm2'\)"):
      fn()
  config.sampling.update(method='heun', ode_steps=0)
  with pytest.raises(ValueError, match='n_steps'):  # At construction, before any call.
    sampling.get_sampler(config, score_fn=score_fn)
  config.method, config.sampling.ode_steps, config.sampling.t0 = 'csm', 18, 0.0
  with pytest.raises(ValueError, match='t0'):
    sampling.get_sampler(config, score_fn=score_fn)
  x, rng = jnp.zeros((1, 2, 2, 1)), jax.random.key(0)
  with pytest.raises(ValueError, match='ODE solver must be one of'):
    ode_sampling.ode_sample(score_fn, SDE, x, None, rng, SamplerSettings(solver='pc'))
  with pytest.raises(ValueError, match='sigma_lo'):
    ode_sampling.ode_csm_sample(score_fn, SDE, x, rng, _ode(t0=0.1), sigma_lo=1.0)
