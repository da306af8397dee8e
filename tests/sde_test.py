"""Tests of the VE SDE against float64 formulas, finite differences and scipy.stats."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from score_sde_knee import sde as sde_lib

SMIN, SMAX = 0.01, 128.0


def _sigma64(t):
  return SMIN * (SMAX / SMIN) ** np.asarray(t, np.float64)


@pytest.fixture
def sde():
  return sde_lib.VESDE(SMIN, SMAX, 500)


def test_sigma_endpoints_and_geometric_growth(sde):
  t = jnp.asarray([0.0, 0.25, 0.5, 1.0])
  np.testing.assert_allclose(sde.sigma(t), _sigma64(t), rtol=1e-5)
  np.testing.assert_allclose(sde.sigma(jnp.asarray(1.0)), SMAX, rtol=1e-6)
  np.testing.assert_allclose(sde.sigma(jnp.asarray(0.0)), SMIN, rtol=1e-6)
  # Geometric: equal steps in t multiply sigma by equal factors.
  np.testing.assert_allclose(sde.sigma(jnp.asarray(0.5)) ** 2,
                             sde.sigma(jnp.asarray(0.0)) * sde.sigma(jnp.asarray(1.0)),
                             rtol=1e-5)
  assert sde.T == 1.0


def test_diffusion_squared_is_the_derivative_of_the_variance(sde):
  t = np.linspace(0.05, 0.95, 7)
  h = 1e-6
  # Float64 central differences of the analytic variance sigma(t)^2.
  dvar = (_sigma64(t + h) ** 2 - _sigma64(t - h) ** 2) / (2 * h)
  g = np.asarray(sde.diffusion(jnp.asarray(t, jnp.float32)), np.float64)
  np.testing.assert_allclose(g ** 2, dvar, rtol=1e-4)


def test_drift_is_zero(sde):
  x = jnp.ones((2, 3, 3, 1))
  np.testing.assert_array_equal(sde.drift(x, jnp.asarray([0.1, 0.9])), np.zeros((2, 3, 3, 1)))


def test_marginal_prob(sde):
  x0 = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 4, 4, 1)), jnp.float32)
  t = jnp.asarray([1e-5, 0.4, 1.0])
  mean, std = sde.marginal_prob(x0, t)
  np.testing.assert_array_equal(mean, x0)
  np.testing.assert_allclose(std, _sigma64(t), rtol=1e-5)


def test_prior_sampling_statistics(sde):
  z = np.asarray(sde.prior_sampling(jax.random.key(0), (64, 32, 32, 1)), np.float64)
  assert z.shape == (64, 32, 32, 1)
  n = z.size
  assert abs(z.mean()) < 5 * SMAX / np.sqrt(n)
  # The std of a sample std is about sigma / sqrt(2n).
  assert abs(z.std() - SMAX) < 5 * SMAX / np.sqrt(2 * n)
  assert abs(stats.kurtosis(z.ravel())) < 0.05  # Gaussian tails, not uniform or heavy.


def test_prior_logp_matches_scipy(sde):
  z = np.random.default_rng(1).normal(scale=SMAX, size=(3, 5, 5, 1))
  got = np.asarray(sde.prior_logp(jnp.asarray(z, jnp.float32)), np.float64)
  expected = stats.norm.logpdf(z, loc=0.0, scale=SMAX).reshape(3, -1).sum(axis=1)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_discretize_variance_increments(sde):
  x = jnp.zeros((3, 2, 2, 1))
  t = jnp.asarray([1.0, 0.5, 0.01])
  dt = 1.0 / sde.num_scales
  f, g = sde.discretize(x, t, dt)
  np.testing.assert_array_equal(f, np.zeros((3, 2, 2, 1)))
  t64 = np.asarray([1.0, 0.5, 0.01])
  expected = np.sqrt(_sigma64(t64) ** 2 - _sigma64(t64 - dt) ** 2)
  np.testing.assert_allclose(g, expected, rtol=1e-3)


def test_discretize_last_step_goes_to_zero_noise(sde):
  # From t = dt (or less) the previous level is sigma = 0: the whole variance is removed.
  dt = 1.0 / sde.num_scales
  _, g = sde.discretize(jnp.zeros((1,)), jnp.asarray(dt), dt)
  np.testing.assert_allclose(g, _sigma64(dt), rtol=1e-5)


def test_increments_add_up_to_the_total_variance(sde):
  # Sum of G^2 over a grid from 1 down to 0 telescopes to sigma(1)^2.
  n = sde.num_scales
  t = jnp.linspace(1.0, 1.0 / n, n)
  _, g = sde.discretize(jnp.zeros((n,)), t, 1.0 / n)
  np.testing.assert_allclose(np.sum(np.asarray(g, np.float64) ** 2), SMAX ** 2, rtol=1e-3)


@pytest.mark.parametrize('kwargs', [
    dict(sigma_min=0.0, sigma_max=1.0),
    dict(sigma_min=-1.0, sigma_max=1.0),
    dict(sigma_min=2.0, sigma_max=1.0),
    dict(sigma_min=1.0, sigma_max=1.0),
    dict(sigma_min=0.01, sigma_max=1.0, num_scales=0),
])
def test_invalid_arguments_raise(kwargs):
  with pytest.raises(ValueError, match='VESDE'):
    sde_lib.VESDE(**kwargs)
