"""The back-projector against JAX's own transpose of the projector (skip_air=False)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_knee.xray import backprojector
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import projector

GEOMETRY = geometry_lib.ConeBeamGeometry().with_detector(24)


@pytest.mark.parametrize('spacing, max_step_mm, angles', [
    ((3.0, 2.5, 3.0), 2.0, (2.0, 30.0, 88.0, 95.0, 180.0, 265.0)),  # no layers merged
    ((3.0, 1.0, 0.9), 2.0, (0.0, 45.0, 91.0)),  # pairs of layers merged on both axes
    ((3.0, 1.0, 0.9), 0.0, (-3.0, 135.0)),
])
def test_matches_jax_linear_transpose_of_the_projector(spacing, max_step_mm, angles):
  shape, offset = (16, 20, 24), (2.0, -3.0, 1.5)
  angles = np.asarray(angles)
  y = np.random.default_rng(1).standard_normal((len(angles), 24, 24)).astype(np.float32)
  linear = functools.partial(projector.project, spacing_mm=spacing, geometry=GEOMETRY,
                             angles_deg=angles, offset_mm=offset, max_step_mm=max_step_mm,
                             skip_air=False)
  (ref,) = jax.linear_transpose(linear, jax.ShapeDtypeStruct(shape, jnp.float32))(y)
  got = backprojector.transpose_of_project(jnp.asarray(y), shape, spacing, GEOMETRY, angles,
                                           offset, max_step_mm)
  assert got.shape == shape and got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))
