"""Tests of the cone-beam projector against exact integrals and the geometry's formula."""
import math

import jax
import numpy as np
import pytest

from score_sde_knee.xray import analytic
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import projector

# 48 x 48 pixels of 3.2 mm: a 96 mm field of view at the isocentre, for the small scenes.
GEOMETRY = geometry_lib.ConeBeamGeometry(detector_rows=48, detector_cols=48,
                                         pixel_pitch_mm=3.2)
# The accuracy tests use the design's geometry (192 mm field of view) with fewer pixels.
GEOMETRY_48 = geometry_lib.ConeBeamGeometry().with_detector(48)
# Both stepping axes, oblique views and the two sides of the orbit.
ANGLES = np.array([0.0, 33.0, 90.0, 137.0, 222.0, 300.0])


def _relative_l2(x, ref):
  return float(np.linalg.norm(np.asarray(x, np.float64) - ref) / np.linalg.norm(ref))


def _exact(ellipsoids, geometry, angles):
  sources, pixels = analytic.rays(geometry, angles)
  return analytic.line_integrals(ellipsoids, sources, pixels)


@pytest.fixture(scope='module')
def leg_on_1mm_grid():
  # The leg-sized scene spans about +-75 x +-65 x +-120 mm (x, y, z).
  scene = analytic.knee_like(1.0)
  return scene, analytic.voxelise(scene, (244, 148, 164), (1.0, 1.0, 1.0))


@pytest.mark.parametrize('max_step_mm', [2.0, 0.0])
def test_matches_exact_ellipsoid_integrals_on_a_1mm_grid(leg_on_1mm_grid, max_step_mm):
  scene, volume = leg_on_1mm_grid
  got = projector.project(volume, (1, 1, 1), GEOMETRY_48, ANGLES, max_step_mm=max_step_mm)
  ref = _exact(scene, GEOMETRY_48, ANGLES)
  assert got.shape == (len(ANGLES), 48, 48) and got.dtype == np.float32
  assert ref.max() > 3.0  # The scene is in view: ~15 cm of tissue at ~0.02 /mm.
  assert _relative_l2(got, ref) <= 0.01


def test_anisotropic_spacing_and_offset_follow_the_documented_voxel_centres():
  # The volume's centre sits at (x, y, z) = (4, -3, 5) mm; the scene moves with it.
  offset_zyx, spacing = (5.0, -3.0, 4.0), (1.25, 0.8, 1.0)
  shift = np.array([4.0, -3.0, 5.0])
  scene = [analytic.Ellipsoid(tuple(np.add(e.centre_mm, shift)), e.semi_axes_mm,
                              e.density, e.rotation_z_deg) for e in analytic.knee_like(1.0)]
  volume = analytic.voxelise(scene, (196, 186, 164), spacing, offset_zyx)
  got = projector.project(volume, spacing, GEOMETRY_48, ANGLES, offset_mm=offset_zyx)
  assert _relative_l2(got, _exact(scene, GEOMETRY_48, ANGLES)) <= 0.01


def _predicted_pixel(point_xyz, angle_deg, sid, sdd, pitch, n):
  """Where a point projects, by turning the world so that the source sits at (0, -sid)."""
  t = math.radians(angle_deg)
  x, y, z = point_xyz
  # Rotating by -theta about z takes the source R (sin t, -cos t) to (0, -R).
  xr = math.cos(t) * x + math.sin(t) * y
  yr = -math.sin(t) * x + math.cos(t) * y
  scale = sdd / (yr + sid)
  return (n - 1) / 2 - z * scale / pitch, xr * scale / pitch + (n - 1) / 2


def test_a_small_ball_lands_on_the_predicted_pixel():
  geometry = geometry_lib.ConeBeamGeometry(detector_rows=64, detector_cols=64,
                                           pixel_pitch_mm=1.2)
  point = (10.0, -8.0, 12.0)  # (x, y, z) mm, above the orbit plane.
  volume = analytic.voxelise([analytic.Ellipsoid(point, (0.8, 0.8, 0.8), 1.0)],
                             (40, 40, 40), (1.0, 1.0, 1.0))
  angles = np.array([0.0, 30.0, 90.0, 200.0, 315.0])
  images = np.asarray(projector.project(volume, (1, 1, 1), geometry, angles))
  rows, cols = np.mgrid[:64, :64]
  for image, angle in zip(images, angles):
    row, col = _predicted_pixel(point, angle, 750.0, 1200.0, 1.2, 64)
    assert row < 31.5  # +z is above the centre: row 0 is the top.
    peak = np.unravel_index(np.argmax(image), image.shape)
    assert abs(peak[0] - row) < 1 and abs(peak[1] - col) < 1
    w = image / image.sum()
    assert abs((w * rows).sum() - row) < 0.1 and abs((w * cols).sum() - col) < 0.1
    np.testing.assert_allclose(geometry.project_points(point, angle), (row, col), atol=1e-9)


def test_opposite_views_of_a_mirror_symmetric_object_are_mirror_images():
  # Symmetric under y -> -y (the beam axis at 0 and 180 deg), asymmetric in x and z.
  scene = [analytic.Ellipsoid((15.0, 0.0, 10.0), (8.0, 12.0, 6.0), 0.03),
           analytic.Ellipsoid((-6.0, 9.0, -12.0), (5.0, 4.0, 9.0), 0.02),
           analytic.Ellipsoid((-6.0, -9.0, -12.0), (5.0, 4.0, 9.0), 0.02)]
  volume = analytic.voxelise(scene, (48, 48, 56), (1.0, 1.0, 1.0))
  views = np.asarray(projector.project(volume, (1, 1, 1), GEOMETRY, [0.0, 180.0]))
  assert _relative_l2(views[0], views[0, :, ::-1]) > 0.1  # Not left-right symmetric itself.
  assert _relative_l2(views[0], views[0, ::-1]) > 0.1     # Nor top-bottom.
  np.testing.assert_allclose(views[1], views[0, :, ::-1], rtol=1e-4, atol=1e-5)


def test_chunks_do_not_change_the_result():
  rng = np.random.default_rng(0)
  volume = rng.random((20, 24, 28), np.float32)
  angles = np.array([-30.0, -10.0, 10.0, 30.0, 150.0, 170.0, 190.0])  # One stepping axis.
  whole = projector.project(volume, (1.5, 1, 1), GEOMETRY, angles, view_chunk=len(angles))
  for chunk in (1, 3):
    np.testing.assert_allclose(
        projector.project(volume, (1.5, 1, 1), GEOMETRY, angles, view_chunk=chunk), whole,
        rtol=1e-6, atol=1e-6)


def test_empty_volume_and_default_angles():
  images = projector.project(np.zeros((8, 8, 8), np.float32), (1, 1, 1),
                             GEOMETRY.with_detector(8))
  assert images.shape == (60, 8, 8) and not np.any(np.asarray(images))


def test_projector_rejects_bad_input():
  g, vol = GEOMETRY, np.zeros((4, 4, 4), np.float32)
  with pytest.raises(ValueError, match='3-D'):
    projector.project(np.zeros((4, 4)), (1, 1, 1), g)
  with pytest.raises(ValueError, match='spacing_mm'):
    projector.project(vol, (1, 0, 1), g)
  with pytest.raises(ValueError, match='spacing_mm'):
    projector.project(vol, (1, 1), g)
  with pytest.raises(ValueError, match='offset_mm'):
    projector.project(vol, (1, 1, 1), g, offset_mm=(0, float('nan'), 0))
  with pytest.raises(ValueError, match='angles_deg'):
    projector.project(vol, (1, 1, 1), g, [[0.0]])
  with pytest.raises(ValueError, match='max_step_mm'):
    projector.project(vol, (1, 1, 1), g, max_step_mm=-1)
  with pytest.raises(ValueError, match='view_chunk'):
    projector.project(vol, (1, 1, 1), g, view_chunk=0)
  with pytest.raises(ValueError, match='concrete'):
    jax.jit(lambda a: projector.project(vol, (1, 1, 1), g, a))(np.zeros(2))


def test_without_air_skipping_the_integrals_are_the_same_and_transposable():
  # Air around an off-centre ball: skipping leaves layers out, the full loop visits them.
  volume = analytic.voxelise([analytic.Ellipsoid((12.0, -9.0, 4.0), (10.0, 8.0, 12.0), 0.02)],
                             (24, 40, 44), (1.5, 1.0, 1.0))
  skipped = projector.project(volume, (1.5, 1, 1), GEOMETRY, ANGLES)
  full = projector.project(volume, (1.5, 1, 1), GEOMETRY, ANGLES, skip_air=False)
  np.testing.assert_allclose(full, skipped, rtol=1e-6, atol=1e-7)
  # Reverse mode works and is the transpose: <grad of <A x, y>, d> = <A d, y>.
  y = np.random.default_rng(0).standard_normal(skipped.shape).astype(np.float32)
  grad = jax.grad(lambda x: jax.numpy.vdot(
      projector.project(x, (1.5, 1, 1), GEOMETRY, ANGLES, skip_air=False), y))(volume)
  d = np.random.default_rng(1).random(volume.shape, np.float32)
  lhs = float(np.vdot(np.asarray(grad, np.float64), d))
  rhs = float(np.vdot(np.asarray(projector.project(d, (1.5, 1, 1), GEOMETRY, ANGLES),
                                 np.float64), y))
  assert lhs == pytest.approx(rhs, rel=1e-4)
