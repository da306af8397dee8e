"""sampling_variants: the jump grid, and pc_sample's known pixels (score_sde's inpainting)
and the air outside the contour (air_pixels, known_air), with the exact scores and the
float64 reference of helpers.py. The corrector variants: sampling_modes_test.py."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from score_sde_knee import sampling
from score_sde_knee import sampling_variants
from score_sde_knee import sde as sde_lib
from score_sde_knee.sampler_setting import SamplerSettings
import helpers
from helpers import SDE, Z_TOL

gaussian_score = functools.partial(helpers.gaussian_score, s=0.06, sde=SDE)


def test_pc_grid():
  np.testing.assert_allclose(sampling_variants.pc_grid(0.4, 1e-3, 5), np.linspace(0.4, 1e-3, 5),
                             rtol=1e-6)
  np.testing.assert_allclose(sampling_variants.pc_grid(0.4, 1e-3, 5, t_jump=0.6),
                             np.linspace(0.4, 1e-3, 5), rtol=1e-6)  # no jump above t_start
  np.testing.assert_allclose(sampling_variants.pc_grid(1.0, 1e-3, 5, t_jump=0.5),
                             [1.0, 0.5, 0.333667, 0.167333, 1e-3], rtol=1e-5)


@pytest.mark.parametrize('snr,n_corrector', [(0.0, 1), (0.4, 2)])
def test_known_pixels_match_float64_reference(snr, n_corrector):
  sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=2.0, num_scales=7)
  m, s = 0.3, 0.2
  rng = jax.random.key(7)
  x0 = np.asarray(jax.random.normal(jax.random.key(8), (3, 4, 4, 1))) * 2.0
  mask = np.arange(16).reshape(1, 4, 4, 1) % 3 == 0
  known = (mask, 0.05)
  got = np.asarray(sampling.pc_sample(
      helpers.gaussian_score(m, s, sde), sde, jnp.asarray(x0), None, rng,
      SamplerSettings(n_steps=7, snr=snr, n_steps_each=n_corrector),
      known=(jnp.asarray(mask), jnp.float32(0.05))))
  want = helpers.reference_pc(x0, m, s, sde, rng, 7, snr, n_corrector if snr else 0,
                       'predictor_first', False, known)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(got[:, mask[0, ..., 0]], np.float32(0.05))
  # The free pixels feel the known ones only through the corrector's batch-wide step.
  free = helpers.reference_pc(x0, m, s, sde, rng, 7, snr, n_corrector if snr else 0,
                       'predictor_first', False)
  assert (np.abs(free - want)[:, ~mask[0, ..., 0]].max() > 1e-4) == bool(snr)


def test_known_pixel_steers_a_correlated_one():
  # Pixel pairs (a, b) ~ N(m, s^2 [[1, r], [r, 1]]), b known = v; the exact conditional is
  # a ~ N(m + r (v - m), s^2 (1 - r^2)). The exact perturbed score is -(C + sigma^2 I)^-1
  # (x - m). Predictor only, every step is linear and b is redrawn independently of a, so
  # a's mean and variance follow a float64 recursion, which the sampler must match. That
  # recursion keeps only ~60 % of the conditional shift: replacement alone is not
  # posterior sampling. The paper's corrector (snr 0.4), which at each level samples a
  # given the perturbed b, must bring the mean within 3 % of the conditional's and the std
  # within its usual inflation (~6 %, module docstring).
  sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0, num_scales=300)
  m, s, r, v = 0.5, 0.1, 0.8, 0.7
  shift, cond_std = r * (v - m), s * np.sqrt(1 - r**2)

  def score_fn(x, t, cond):
    sig2 = sde.sigma(t).reshape(-1, 1, 1, 1) ** 2
    a, b = x[..., :1] - m, x[..., 1:] - m
    d, o = s**2 + sig2, r * s**2
    det = d**2 - o**2
    return jnp.concatenate([(d * a - o * b) / -det, (d * b - o * a) / -det], axis=-1)

  x0 = sde.sigma_max * jax.random.normal(jax.random.key(1), (64, 16, 16, 2))  # 16384 pairs.
  known = (jnp.array([False, True]), jnp.float32(v))
  run = jax.jit(lambda x, k, snr: sampling.pc_sample(
      score_fn, sde, x, None, k, SamplerSettings(n_steps=300, snr=snr), known=known),
      static_argnums=2)
  ts = np.linspace(1.0, 1e-5, 300)
  sig = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** ts
  sig_next = np.append(sig[1:], 0.0)
  mean, var_a = 0.0 - m, sde.sigma_max**2  # a - m at the start.
  for i in range(300):
    d, o = s**2 + sig[i] ** 2, r * s**2
    k_aa, k_ab = d / (d**2 - o**2), -o / (d**2 - o**2)
    step = sig[i] ** 2 - sig_next[i] ** 2
    mean = (1 - step * k_aa) * mean - step * k_ab * (v - m)
    var_a = (1 - step * k_aa) ** 2 * var_a + step**2 * k_ab**2 * sig[i] ** 2 + (
        step if i < 299 else 0.0)
  for snr in (0.0, 0.4):
    x = np.asarray(run(x0, jax.random.key(2), snr), np.float64)
    np.testing.assert_array_equal(x[..., 1], np.float32(v))
    a = x[..., 0].ravel() - m
    if snr == 0:
      std = np.sqrt(var_a)
      assert abs(a.mean() - mean) < Z_TOL * std / np.sqrt(a.size)
      assert abs(a.std() / std - 1) < Z_TOL / np.sqrt(2 * a.size)
      assert 0.5 < mean / shift < 0.7
    else:
      assert abs(a.mean() / shift - 1) < 0.03
      assert 1.0 < a.std() / cond_std < 1.08


@pytest.mark.parametrize('margin', [0, 1, 2, 3])
def test_air_pixels_lie_beyond_the_margin_by_euclidean_distance(margin):
  rng = np.random.default_rng(margin)
  seg = np.zeros((3, 24, 20, 1), np.float32)
  for b in range(3):  # Blobs that touch the border too.
    yy, xx = np.mgrid[:24, :20]
    cy, cx, r = rng.uniform(0, 24), rng.uniform(0, 20), rng.uniform(3, 8)
    seg[b, ..., 0] = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r**2, 0.5, 0.0)
  seg[0, 5, 5, 0] = 1.0  # A lone bone pixel is segmented too.
  known, value = sampling_variants.air_pixels(jnp.asarray(seg), margin)
  distance = np.stack([ndimage.distance_transform_edt(s[..., 0] == 0) for s in seg])
  np.testing.assert_array_equal(np.asarray(known)[..., 0], distance > margin + 0.5)
  assert float(value) == 0.0 and (distance > margin + 0.5).any()


def test_known_air_holds_the_pixels_outside_the_mask_at_zero():
  m = helpers.means((8, 8, 1))
  mask = np.zeros((4, 8, 8, 1), np.float32)
  mask[:, 2:6, 1:7] = 0.5
  mask[:, 3:5, 3:5] = 1.0
  air = mask == 0
  for sample in (
      lambda k, a: sampling.csm_sample(gaussian_score(m), SDE, mask, k,
                                       SamplerSettings(known_air=a, n_steps=20)),
      lambda k, a: sampling.ctm_sample(gaussian_score(m), SDE, mask, k,
                                       SamplerSettings(known_air=a, n_steps=20))):
    held = np.asarray(sample(jax.random.key(3), True))
    free = np.asarray(sample(jax.random.key(3), False))
    np.testing.assert_array_equal(held[air], 0.0)
    assert (free[air] > 0.1).mean() > 0.9  # The toy data's means are 0.3-0.7.
    assert (held[~air] > 0.1).mean() > 0.9
