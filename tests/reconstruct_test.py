"""Tests of the back-projector (the projector's transpose), FDK, CGLS and SIRT.

FDK is checked against exact ellipsoid integrals (analytic.py) and the voxelised scene, in
the slices at and beside the orbit plane z = 0, where FDK is exact (at z = 0) or nearly.
Bounds (measured with JAX 0.10.2 on a CPU, then given a margin):
- relative L2 error of those three slices vs the voxel phantom: at most 0.146 measured
  on the wide-cone geometry (5 mm voxels), 0.121 on the project's geometry (4 mm);
  bound 0.17. The error sits at the edges, where the voxels and 48 pixels blur the
  ellipsoids' surfaces, so this bound alone cannot see a missing cosine weight (0.156).
- mean over the interior (the tissue 3 voxels in from its edge) of the z = 0 slice within
  0.4 % of the phantom's: measured -0.09 % (wide) and -0.16 %. Without the cosine weight
  the wide cone (fan half-angle 31 deg) gives +0.74 %, without the (R / L)^2 weight
  -8.9 %, with twice the scale +100 %, without the ramp filter 300x: each fails.
"""
import functools

import numpy as np
import pytest
from scipy import ndimage

from score_sde_knee.xray import analytic
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import projector
from score_sde_knee.xray import reconstruct

GEOMETRY_32 = geometry_lib.ConeBeamGeometry().with_detector(32)
# Fan half-angle 31 deg (the project's geometry has 7): a missing cosine weight shows.
WIDE = geometry_lib.ConeBeamGeometry(source_to_detector_mm=500.0, source_to_isocentre_mm=250.0,
                                     detector_rows=48, detector_cols=48, pixel_pitch_mm=12.5)
# Both stepping axes (near 0 and near 90 deg), oblique views, both sides of the orbit.
ANGLES = np.array([2.0, 30.0, 88.0, 95.0, 180.0, 265.0])


def _relative_l2(x, ref):
  x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
  return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize('max_step_mm', [2.0, 0.0])
def test_backproject_is_the_transpose_of_project(max_step_mm):
  # 1 and 0.9 mm voxels along y and x: max_step_mm=2 averages pairs of layers.
  shape, spacing, offset = (20, 40, 36), (3.0, 1.0, 0.9), (1.0, -2.0, 3.0)
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)
  y = rng.standard_normal((len(ANGLES), 32, 32)).astype(np.float32)
  ax = np.asarray(projector.project(x, spacing, GEOMETRY_32, ANGLES, offset_mm=offset,
                                    max_step_mm=max_step_mm), np.float64)
  aty = np.asarray(reconstruct.backproject(y, shape, spacing, GEOMETRY_32, ANGLES,
                                           offset_mm=offset, max_step_mm=max_step_mm))
  assert aty.shape == shape and aty.dtype == np.float32
  lhs, rhs = float(np.sum(ax * y)), float(np.sum(x * aty.astype(np.float64)))
  assert abs(lhs - rhs) <= 1e-4 * abs(lhs)
  # The test has teeth: merging changes A, and A^T of the other setting fails it.
  other = np.asarray(reconstruct.backproject(y, shape, spacing, GEOMETRY_32, ANGLES,
                                             offset_mm=offset,
                                             max_step_mm=2.0 - max_step_mm), np.float64)
  assert abs(lhs - float(np.sum(x * other))) > 1e-2 * abs(lhs)


def _wide_scene():
  e = analytic.Ellipsoid
  return [e((0.0, 0.0, 0.0), (115.0, 100.0, 80.0), 0.02),
          e((25.0, 12.0, 10.0), (38.0, 28.0, 45.0), 0.02),
          e((-45.0, -25.0, -5.0), (18.0, 15.0, 25.0), 0.03),
          e((50.0, -50.0, 0.0), (14.0, 12.0, 12.0), -0.01)]


@pytest.mark.parametrize('name', ['wide', 'project_geometry'])
def test_fdk_of_exact_integrals_reconstructs_the_mid_plane(name):
  if name == 'wide':
    geometry, scene, spacing = WIDE, _wide_scene(), (5.0, 5.0, 5.0)
  else:
    geometry = geometry_lib.ConeBeamGeometry().with_detector(48)
    scene, spacing = analytic.knee_like(0.6), (4.0, 4.0, 4.0)
  shape = (41, 48, 48)  # An odd number of slices: the middle one is z = 0.
  angles = geometry.angles_deg()
  phantom = analytic.voxelise(scene, shape, spacing)
  sinogram = analytic.line_integrals(scene, *analytic.rays(geometry, angles))
  volume = np.asarray(reconstruct.reconstruct_fdk(sinogram.astype(np.float32), shape,
                                                  spacing, geometry, angles))
  assert volume.shape == shape and volume.dtype == np.float32
  mid = shape[0] // 2
  for k in (mid - 1, mid, mid + 1):
    assert _relative_l2(volume[k], phantom[k]) <= 0.17, k
  interior = ndimage.binary_erosion(phantom[mid] > 0, iterations=3)
  assert interior.sum() > 150
  bias = volume[mid][interior].mean() / phantom[mid][interior].mean() - 1.0
  assert abs(bias) <= 0.004
  # Windows smooth the noise, not the scale.
  for window in ('shepp-logan', 'hann'):
    smooth = np.asarray(reconstruct.reconstruct_fdk(sinogram, shape, spacing, geometry,
                                                    angles, window=window))[mid]
    assert abs(smooth[interior].mean() / phantom[mid][interior].mean() - 1.0) <= 0.01
    assert np.abs(np.diff(smooth, axis=1)).mean() < np.abs(np.diff(volume[mid], axis=1)).mean()


def test_ramp_filter_is_the_ramp_at_low_frequencies():
  h = 0.5
  response = reconstruct.ramp_filter(32, h)
  f = np.fft.fftfreq(response.size, d=h)  # cycles per mm
  low = np.abs(f) < 0.25 / h
  np.testing.assert_allclose(response[low], np.abs(f[low]), atol=0.02 / h)
  assert response[0] > 0  # The discrete Ram-Lak kernel keeps a small positive DC term.


@pytest.fixture(scope='module')
def small_scan():
  """A 33 x 32 x 32 leg-like scene at 6 mm, exact integrals onto 32 pixels, 30 views."""
  scene = analytic.knee_like(0.6)
  shape, spacing = (33, 32, 32), (6.0, 6.0, 6.0)
  angles = np.arange(0.0, 360.0, 12.0)
  sinogram = analytic.line_integrals(scene, *analytic.rays(GEOMETRY_32, angles))
  return (sinogram.astype(np.float32), shape, spacing, angles,
          analytic.voxelise(scene, shape, spacing))


def test_cgls_residual_falls_monotonically_and_the_error_first_falls(small_scan):
  sinogram, shape, spacing, angles, phantom = small_scan
  run = functools.partial(reconstruct.reconstruct_cgls, sinogram, shape, spacing,
                          GEOMETRY_32, angles)
  volume, norms = run(n_iters=6)
  norms = np.asarray(norms)
  assert norms.shape == (7,) and np.all(np.diff(norms) < 0)
  assert norms[-1] < 0.1 * norms[0]
  # The recursion's norms are the true ||A x_k - p||, and the error falls at first.
  errors = [1.0]  # x_0 = 0
  for k in (2, 4):
    x_k = run(n_iters=k)[0]
    true = np.linalg.norm(np.asarray(projector.project(x_k, spacing, GEOMETRY_32, angles))
                          - sinogram)
    assert true == pytest.approx(norms[k], rel=1e-3)
    errors.append(_relative_l2(x_k, phantom))
  assert norms[0] == pytest.approx(np.linalg.norm(sinogram), rel=1e-5)
  assert errors[0] > errors[1] > errors[2] and errors[2] < 0.2
  # A warm start goes on from there.
  _, more = run(n_iters=2, x0=volume)
  assert float(more[0]) == pytest.approx(norms[-1], rel=1e-3) and more[-1] < more[0]


def test_sirt_nonneg_keeps_the_volume_non_negative(small_scan):
  sinogram, shape, spacing, angles, phantom = small_scan
  run = functools.partial(reconstruct.reconstruct_sirt, sinogram, shape, spacing,
                          GEOMETRY_32, angles, n_iters=10)
  volume, norms = run(x0=np.full(shape, -1.0, np.float32))
  assert float(np.asarray(volume).min()) >= 0.0
  assert np.all(np.diff(np.asarray(norms)[1:]) < 0)
  assert _relative_l2(volume, phantom) < 0.3
  free, _ = run(nonneg=False)
  assert float(np.asarray(free).min()) < 0.0  # Without the constraint it goes negative.


def test_reconstruction_rejects_bad_input():
  g, shape, spacing = GEOMETRY_32, (8, 8, 8), (4.0, 4.0, 4.0)
  good = np.zeros((len(ANGLES), 32, 32), np.float32)
  with pytest.raises(ValueError, match=r'shape \(views, rows, cols\) = \(6, 32, 32\)'):
    reconstruct.backproject(good[:5], shape, spacing, g, ANGLES)
  with pytest.raises(ValueError, match='3-D'):
    reconstruct.backproject(good[0], shape, spacing, g, ANGLES)
  with pytest.raises(ValueError, match='spacing_mm'):
    reconstruct.backproject(good, shape, (4.0, 0.0, 4.0), g, ANGLES)
  with pytest.raises(ValueError, match='volume_shape'):
    reconstruct.backproject(good, (8, 8), spacing, g, ANGLES)
  with pytest.raises(ValueError, match='360'):
    reconstruct.reconstruct_fdk(good, shape, spacing, g, ANGLES)
  full = np.zeros((60, 32, 32), np.float32)
  with pytest.raises(ValueError, match='window'):
    reconstruct.reconstruct_fdk(full, shape, spacing, g, window='cosine')
  with pytest.raises(ValueError, match='spacing_mm'):
    reconstruct.reconstruct_fdk(full, shape, (-1.0, 4.0, 4.0), g)
  with pytest.raises(ValueError, match='n_iters'):
    reconstruct.reconstruct_cgls(good, shape, spacing, g, ANGLES, n_iters=-1)
  with pytest.raises(ValueError, match='x0'):
    reconstruct.reconstruct_sirt(good, shape, spacing, g, ANGLES, x0=np.zeros((8, 8, 9)))
