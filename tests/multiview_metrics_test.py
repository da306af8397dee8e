"""multiview_metrics: area resampling against block means, sharpness against a scipy blur,
the phantom's own volume on the grid (bone Dice 1, PSNR inf)."""
import numpy as np
import pytest
from scipy import ndimage

from score_sde_knee import multiview
from score_sde_knee import multiview_metrics
from score_sde_knee.xray import drr
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import phantom
from helpers import TINY

GRID = 16


def test_area_resample_against_block_means():
  rng = np.random.default_rng(0)
  v = rng.random((8, 6, 4)).astype(np.float32)
  got = multiview_metrics.area_resample(v, (1.0, 1.0, 1.0), (4, 3, 2), (2.0, 2.0, 2.0))
  np.testing.assert_allclose(got, v.reshape(4, 2, 3, 2, 2, 2).mean(axis=(1, 3, 5)), rtol=1e-6)
  # A grid larger than the volume: air around it; the integral is kept.
  ones = np.ones((4, 4, 4), np.float32)
  got = multiview_metrics.area_resample(ones, (1.0, 1.0, 1.0), (1, 1, 1), (8.0, 8.0, 8.0))
  assert got[0, 0, 0] == pytest.approx(1 / 8)
  got = multiview_metrics.area_resample(v, (1.0, 1.0, 1.0), (5, 5, 5), (3.0, 1.5, 1.25))
  assert got.sum() * 3.0 * 1.5 * 1.25 == pytest.approx(v.sum(), rel=1e-5)


def test_volume_sharpness_of_itself_and_of_a_blur():
  rng = np.random.default_rng(1)
  v = ndimage.gaussian_filter(rng.random((20, 16, 16)), 1.0)
  spacing = (3.4, 3.0, 3.0)
  assert multiview_metrics.volume_sharpness(v, v, spacing, margin=1) == 1.0
  blurred = ndimage.gaussian_filter(v, 1.5)
  assert multiview_metrics.volume_sharpness(blurred, v, spacing, margin=1) < 0.5
  # A ramp along z: its energy is the slope squared, whatever the margin.
  z = np.arange(10, dtype=np.float64)[:, None, None] * np.ones((1, 3, 3))
  energy = multiview_metrics.gradient_energy(0.5 * z, (2.0, 1.0, 1.0), margin=2)
  assert energy == pytest.approx(0.0625)


def test_bone_dice_of_the_phantom_itself():
  """The phantom's own v volume scores 1; the threshold sits where 200 HU does: a volume
  a little below it everywhere loses the voxels just above it."""
  geometry = geometry_lib.ConeBeamGeometry().with_detector(16)
  c = multiview.for_geometry(geometry, GRID, np.arange(6) * 60.0)
  ref = multiview_metrics.reference('phantom_0001', TINY, 3, c)
  assert ref.volume.shape == c.volume_shape and ref.c > 0
  assert multiview_metrics.bone_dice_3d(ref.volume, ref) == 1.0
  assert multiview_metrics.volume_psnr(ref.volume, ref) == np.inf
  assert multiview_metrics.bone_dice_3d(0.9 * ref.volume, ref) < 1.0
  # Against the bone mask made on its own: HU >= 200 resampled, at least half a voxel.
  p = phantom.make_phantom(1, spacing_mm=TINY.spacing_mm, revision=3)
  bone = (p.hu >= drr.BONE_THRESHOLD_HU).astype(np.float32)
  fraction = multiview_metrics.area_resample(bone, p.spacing_mm, c.volume_shape, c.spacing_mm)
  mask = ref.volume >= ref.bone_v
  assert mask.any() and 2 * (mask & (fraction >= 0.5)).sum() / (
      mask.sum() + (fraction >= 0.5).sum()) > 0.6
