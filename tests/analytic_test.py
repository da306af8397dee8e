"""Tests of the exact ellipsoid reference: chords and voxelised volumes."""
import math

import numpy as np

from score_sde_knee.xray import analytic
from score_sde_knee.xray import geometry as geometry_lib


def test_chords_through_a_sphere_and_a_rotated_ellipsoid():
  sphere = analytic.Ellipsoid((1.0, 2.0, 3.0), (10.0, 10.0, 10.0), 0.5)
  # Two views of one ray each, along y: through the centre, and 6 mm off it.
  sources = np.array([[1.0, -100.0, 3.0], [7.0, -100.0, 3.0]])
  ends = np.array([[[1.0, 100.0, 3.0]], [[7.0, 100.0, 3.0]]])
  got = analytic.line_integrals([sphere], sources, ends)
  assert got.shape == (2, 1)
  np.testing.assert_allclose(got[:, 0], [0.5 * 20.0, 0.5 * 2 * math.sqrt(100 - 36)],
                             rtol=1e-12)
  # Semi-axis 30 turned by 90 deg about z lies along y: a ray along y crosses 60 mm.
  long = analytic.Ellipsoid((0.0, 0.0, 0.0), (30.0, 5.0, 5.0), 1.0, rotation_z_deg=90.0)
  got = analytic.line_integrals([long], np.array([[0.0, -50, 0]]), np.array([[[0.0, 50, 0]]]))
  np.testing.assert_allclose(got, [[60.0]])
  # A segment that stops inside counts only the part it covers.
  got = analytic.line_integrals([long], np.array([[0.0, -50, 0]]), np.array([[[0.0, 0, 0]]]))
  np.testing.assert_allclose(got, [[30.0]])


def test_rays_start_at_the_source_and_end_on_the_detector():
  g = geometry_lib.ConeBeamGeometry().with_detector(4)
  sources, pixels = analytic.rays(g, [0.0, 90.0])
  np.testing.assert_allclose(sources, [[0, -750, 0], [750, 0, 0]], atol=1e-9)
  assert pixels.shape == (2, 4, 4, 3)
  np.testing.assert_allclose(pixels[0, :, :, 1], 450.0)        # Detector plane y = 450.
  assert pixels[0, 0, 0, 2] > 0 and pixels[0, 0, 0, 0] < 0     # Row 0 top, column 0 at -x.
  np.testing.assert_allclose(pixels[1, :, :, 0], -450.0, atol=1e-9)


def test_voxelised_mass_matches_the_ellipsoid_volume():
  e = analytic.Ellipsoid((1.3, -0.7, 2.1), (9.0, 6.5, 12.0), 2.0, rotation_z_deg=25.0)
  vol = analytic.voxelise([e], (32, 24, 26), (1.0, 0.75, 1.0), offset_mm=(2.0, 0.0, 1.0))
  mass = vol.astype(np.float64).sum() * 1.0 * 0.75 * 1.0
  exact = 2.0 * 4 / 3 * math.pi * 9.0 * 6.5 * 12.0
  assert abs(mass - exact) / exact < 2e-3
  assert vol.max() == np.float32(2.0) and vol.min() == 0.0
