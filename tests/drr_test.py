"""DRR values and masks (docs/design.md, "Attenuation, DRR and masks") against formulas here."""
import numpy as np
import pytest

from score_sde_knee.xray import drr
from score_sde_knee.xray import geometry as geometry_lib


def test_hu_to_mu_matches_formula_and_clamps_padding():
  hu = np.array([-3024, -2048, -1024, -1000, 0, 1000, 1500], np.float32)
  expected = 0.0193 * (1 + np.maximum(hu.astype(np.float64), -1000) / 1000)
  np.testing.assert_allclose(drr.hu_to_mu(hu), expected, rtol=1e-6, atol=1e-9)
  assert drr.hu_to_mu(hu)[:4].max() == 0.0  # all padding values are air


def test_normalise_divides_by_common_max():
  p = np.array([[[1.0, 2.0]], [[4.0, 0.5]]], np.float32)
  img, scale = drr.normalise(p)
  assert scale == 4.0
  np.testing.assert_allclose(img, p / 4.0)
  with pytest.raises(ValueError, match='maximum'):
    drr.normalise(np.zeros((2, 3, 3), np.float32))


def test_masks_values_and_thresholds():
  image = np.array([[0.0, 0.1, 0.1001, 0.9]], np.float32)
  contour = drr.contour_mask(image)
  np.testing.assert_array_equal(contour, [[0, 0, 0.5, 0.5]])
  bone_proj = np.array([[5.0, 0.0, 1e-4, 3.0]], np.float32)
  cb = drr.contour_bone_mask(contour, bone_proj)
  # Bone outside the silhouette is dropped; round-off-sized bone is not bone.
  np.testing.assert_array_equal(cb, [[0, 0, 0.5, 1.0]])


def test_scan_volume_of_a_bone_cylinder_in_water():
  # A water cylinder along z with a bone core: contour covers the water's shadow, bone
  # the core's, and the DRR max is 1 at the thickest path.
  n, sp = 48, 2.0
  c = np.arange(n) - (n - 1) / 2
  _, y, x = np.meshgrid(c, c, c, indexing='ij')
  r = np.hypot(x, y) * sp
  hu = np.full((n, n, n), -1000, np.float32)
  hu[r < 35] = 0
  hu[r < 10] = 1500
  geo = geometry_lib.ConeBeamGeometry().with_detector(32)
  s = drr.scan_volume(hu, (sp, sp, sp), geo, np.array([0.0, 90.0], np.float32))
  assert s.image.shape == (2, 32, 32) and s.image.dtype == np.float32
  assert np.isclose(s.image.max(), 1.0) and s.image.min() >= 0
  assert set(np.unique(s.contour)) <= {0.0, 0.5}
  assert set(np.unique(s.contour_bone)) == {0.0, 0.5, 1.0}
  # Where there is bone there is contour; bone is a narrower band than the leg.
  assert np.all(s.contour[s.contour_bone == 1.0] == 0.5)
  mid = s.contour_bone[0, 16]
  assert 0 < (mid == 1.0).sum() < (mid >= 0.5).sum()


def test_scan_volume_rejects_2d():
  with pytest.raises(ValueError, match='3-D'):
    drr.scan_volume(np.zeros((4, 4), np.float32), (1, 1, 1),
                    geometry_lib.ConeBeamGeometry().with_detector(8))
