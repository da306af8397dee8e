"""Tests of consistent multi-view sampling (multiview.py).

The exact score of data N(m, s^2 I) per view, with m the projections of one known volume
on the reconstruction grid, makes the sampler's outcome known: independent draws scatter
around m by s in every pixel, most of it in directions no volume projects to, while the
consistency step keeps only what a volume explains. Measured on the 16 px, 12-view scan
below (JAX 0.10.2, CPU), consistency errors (30 CGLS iterations): 0.0035 for the truth m,
0.047 for independent CTM draws, 0.0018 for consistent ones before CTM's final clip to
[0, 1] and 0.0117 after it (the clip cuts the re-projection's small negative values in the
air around the leg). Without the consistency step both bounds fail.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_knee import multiview
from score_sde_knee import sampling
from score_sde_knee.sampler_setting import SamplerSettings
from score_sde_knee.xray import geometry as geometry_lib
from tests import helpers

GEOMETRY = geometry_lib.ConeBeamGeometry(
    detector_rows=16, detector_cols=16, pixel_pitch_mm=1.2 * 256 / 16, num_views=12,
    angle_step_deg=30.0)
SETTINGS = SamplerSettings(n_steps=20, predictor='ancestral', snr=0.16)
SPREAD = 0.05  # s: each view's pixels scatter this much around m.


def _leg():
  """(Consistency on a 16^3 grid, m (12, 16, 16, 1) in [0, 1], its masks)."""
  c = multiview.for_geometry(GEOMETRY, n=16, n_iters=3)
  z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in c.volume_shape), indexing='ij')
  volume = ((x / 0.5) ** 2 + (y / 0.4) ** 2 + (z / 0.9) ** 2 <= 1).astype(np.float32)
  volume += 1.5 * ((x - 0.15) ** 2 + (y + 0.1) ** 2 <= 0.04)  # A denser 'bone'.
  m = np.asarray(c.project(jnp.asarray(volume)))[..., None]
  m = m / m.max()
  return c, jnp.asarray(m), jnp.where(m > 0.1, 0.5, 0.0)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _sample(mean, cond, consistency, method='ctm'):
  score = helpers.gaussian_score(mean, SPREAD, helpers.SDE)
  return multiview.sample_leg(score, helpers.SDE, cond, jax.random.PRNGKey(7), SETTINGS,
                              consistency, method=method)


def _relative_l2(x, ref):
  return float(jnp.linalg.norm(x - ref) / jnp.linalg.norm(ref))


def test_consistent_views_are_projections_of_one_volume():
  c, m, cond = _leg()
  independent = _sample(m, cond, None)
  consistent = _sample(m, cond, c)
  floor = float(multiview.consistency_error(m, c))
  e_ind = float(multiview.consistency_error(independent, c))
  e_cons = float(multiview.consistency_error(consistent, c))
  assert floor < 0.01  # m is the projection of a volume on the grid.
  assert e_ind > 0.03  # Independent draws disagree: s = 0.05 per pixel.
  assert e_cons < 0.35 * e_ind, (floor, e_ind, e_cons)
  # The step removes part of the draws' noise, not the leg: closer to m (0.090 vs 0.118).
  assert _relative_l2(consistent, m) < 0.9 * _relative_l2(independent, m)
  # Before the clip, the views are the re-projection of one volume.
  score = helpers.gaussian_score(m, SPREAD, helpers.SDE)
  x = helpers.SDE.sigma_max * jax.random.normal(jax.random.PRNGKey(1), m.shape)
  raw = jax.jit(lambda x: sampling.pc_sample(
      score, helpers.SDE, x, cond, jax.random.PRNGKey(2), SETTINGS,
      project=multiview.projection(c, SETTINGS.n_steps)))(x)
  assert float(multiview.consistency_error(raw, c)) < 0.1 * e_ind


@pytest.mark.parametrize('method, settings', [
    ('csm', SETTINGS), ('ctm', SamplerSettings()), ('csm', SamplerSettings())])
def test_csm_and_the_papers_sampler_are_made_consistent_too(method, settings):
  # CSM starts from the perturbed masks at t0 (SDEdit); SamplerSettings() is the paper's
  # PC sampler, N = 500 reverse-diffusion steps with Langevin snr 0.4. The draws of either
  # still scatter around m, and the step must remove most of what no volume explains
  # (measured: 0.050 -> 0.013 for CSM with SETTINGS, 0.055 -> 0.013 and 0.054 -> 0.013 with
  # the paper's sampler for CTM and CSM; most of the rest is the final clip to [0, 1]).
  c, m, cond = _leg()
  score = helpers.gaussian_score(m, SPREAD, helpers.SDE)
  draw = jax.jit(lambda consistency: multiview.sample_leg(
      score, helpers.SDE, cond, jax.random.PRNGKey(7), settings, consistency, method=method),
      static_argnums=0)
  e_ind = float(multiview.consistency_error(draw(None), c))
  e_cons = float(multiview.consistency_error(draw(c), c))
  assert e_ind > 0.03, e_ind
  assert e_cons < 0.35 * e_ind, (e_ind, e_cons)


@pytest.mark.parametrize('method, sample_fn', [
    ('ctm', sampling.ctm_sample), ('csm', sampling.csm_sample)])
def test_a_step_that_never_fires_leaves_the_sampler_bit_for_bit(method, sample_fn):
  c, m, cond = _leg()
  never = multiview.for_geometry(GEOMETRY, n=16, start=SETTINGS.n_steps)
  got = _sample(m, cond, never, method)
  score = helpers.gaussian_score(m, SPREAD, helpers.SDE)
  want = jax.jit(lambda: sample_fn(score, helpers.SDE, cond, jax.random.PRNGKey(7),
                                     SETTINGS))()
  assert np.array_equal(np.asarray(got), np.asarray(want))
  assert not np.array_equal(np.asarray(_sample(m, cond, c, method)), np.asarray(want))


def test_steps_that_project():
  c = multiview.for_geometry(GEOMETRY, n=16, every=3, start=2)
  chosen = np.flatnonzero(np.asarray(c.projects_at(jnp.arange(10), 10)))
  assert chosen.tolist() == [3, 6, 9]  # Counted back from the last step, from step 2 on.


def test_volume_grid_holds_every_ray_through_the_field():
  g = geometry_lib.ConeBeamGeometry().with_detector(64)
  shape, (sz, sy, sx) = multiview.volume_grid(g, 64)
  assert shape == (64, 64, 64) and sy == sx == pytest.approx(3.0)  # 192 mm / 64.
  # The top edge of the detector (row -0.5) sees the grid's top at the field's far side.
  row, _ = g.project_points([0.0, 32 * sy, 32 * sz], 0.0)
  assert row == pytest.approx(-0.5, abs=1e-6)


def test_bad_input_is_refused():
  c, m, cond = _leg()
  score = helpers.gaussian_score(m, SPREAD, helpers.SDE)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match='11 masks for a scan of 12 angles'):
    multiview.sample_leg(score, helpers.SDE, cond[:11], key, SETTINGS, c)
  other = jnp.zeros((12, 32, 32, 1))
  with pytest.raises(ValueError, match='32 x 32 pixels for a 16 x 16 detector'):
    multiview.sample_leg(score, helpers.SDE, other, key, SETTINGS, c)
  with pytest.raises(ValueError, match=r'\(V, H, W, 1\)'):
    multiview.consistency_error(m[..., 0], c)
  with pytest.raises(ValueError, match='single forward pass'):
    multiview.sample_leg(score, helpers.SDE, cond, key, SETTINGS, c, method='unet')
  with pytest.raises(ValueError, match='PC sampler'):
    multiview.sample_leg(score, helpers.SDE, cond, key, SamplerSettings(solver='heun'), c)
  with pytest.raises(ValueError, match='weight must be in'):
    multiview.for_geometry(GEOMETRY, n=16, weight=0.0)
  with pytest.raises(ValueError, match='every must be an integer >= 1'):
    multiview.for_geometry(GEOMETRY, n=16, every=0)
