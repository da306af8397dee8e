"""Tests of masks from a label volume and of the one-body check of a mask set
(multiview_masks.py).

References independent of the code under test: the silhouette of an elliptic cylinder in
the cone beam, from the tangents of the ellipse seen from the source (closed form per
boundary point), for the masks' widths; the same cylinder's silhouettes in every view
(ray-ellipse intersection) for a mask set that is one body by construction, in which a
view shifted sideways by k pixels must show an edge offset of about k pixels.
"""
import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from score_sde_knee import multiview_masks as mm
from score_sde_knee.xray import drr
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import phantom

GEO = dataclasses.replace(geometry_lib.ConeBeamGeometry().with_detector(32), num_views=20,
                          angle_step_deg=18.0)
GEO64 = GEO.with_detector(64)
H = 2.0  # mm voxels of the solids below.
LEG_X, LEG_Y = 50.0, 40.0  # Semi-axes (mm) of the soft-tissue elliptic cylinder.
BONE_X, BONE_R = 10.0, 12.0  # Bone cylinder: centre x and radius (mm), at y = 0.


def _grid(shape):
  """World (z, y, x) mm of voxel centres, the array centred on the isocentre."""
  return np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * H for n in shape], indexing='ij')


def _solid(shape=(48, 56, 56), dx=0.0):
  """Labels of the elliptic soft-tissue cylinder with a bone cylinder inside."""
  _, y, x = _grid(shape)
  labels = np.zeros(shape, np.int16)
  labels[((x - dx) / LEG_X) ** 2 + (y / LEG_Y) ** 2 <= 1] = 1
  labels[(x - dx - BONE_X) ** 2 + y**2 <= BONE_R**2] = 2
  return labels


def _columns_seen(points_xy, angle_deg: float = 0.0):
  """First and last detector column whose centre lies within the projection of the
  boundary points (orbit plane) at `angle_deg`, from the geometry's formulas."""
  t = np.deg2rad(angle_deg)
  r, d, p = GEO.source_to_isocentre_mm, GEO.source_to_detector_mm, GEO.pixel_pitch_mm
  x, y = points_xy
  depth = r - x * np.sin(t) + y * np.cos(t)
  u = d * (x * np.cos(t) + y * np.sin(t)) / depth
  cols = (u / p + (GEO.detector_cols - 1) / 2)
  return int(np.ceil(cols.min())), int(np.floor(cols.max()))


def test_masks_of_a_label_solid_are_scan_volumes_and_have_the_analytic_widths():
  labels = _solid()
  out = mm.masks_from_label_volume(labels, (H, H, H), GEO)
  assert out['contour'].shape == out['contour_bone'].shape == out['image'].shape == (
      20, 32, 32, 1)
  np.testing.assert_allclose(out['angles_deg'], np.arange(20) * 18.0)
  assert set(np.unique(out['contour'])) == {0.0, 0.5}
  assert set(np.unique(out['contour_bone'])) == {0.0, 0.5, 1.0}
  # The HU volume written out here by hand: muscle-like tissue, bone well above 200 HU.
  hu = np.where(labels == 2, 700.0, np.where(labels == 1, 40.0, -1000.0))
  ref = drr.scan_volume(hu, (H, H, H), GEO)
  np.testing.assert_array_equal(out['contour'][..., 0], ref.contour)
  np.testing.assert_array_equal(out['contour_bone'][..., 0], ref.contour_bone)
  np.testing.assert_allclose(out['image'][..., 0], ref.image, atol=1e-6)

  # AP view (0 deg), the central row (1.9 mm off the orbit plane: a vertical cylinder's
  # silhouette does not depend on it): the leg's and the bone's magnified widths.
  phi = np.linspace(0, 2 * np.pi, 20001)
  row = out['contour_bone'][0, 16, :, 0]
  for got, (x, y) in ((np.flatnonzero(row > 0), (LEG_X * np.cos(phi), LEG_Y * np.sin(phi))),
                      (np.flatnonzero(row == 1.0),
                       (BONE_X + BONE_R * np.cos(phi), BONE_R * np.sin(phi)))):
    first, last = _columns_seen((x, y))
    assert abs(got[0] - first) <= 1 and abs(got[-1] - last) <= 1, (got, first, last)
    assert got.size == got[-1] - got[0] + 1  # One run, no holes.


def test_bone_without_soft_tissue_is_allowed():
  labels = np.where(_solid() == 2, 2, 0)
  out = mm.masks_from_label_volume(labels, (H, H, H), GEO)
  # All that projects is bone: every contour pixel is bone.
  assert set(np.unique(out['contour_bone'])) == {0.0, 1.0}
  np.testing.assert_array_equal(out['contour_bone'] > 0, out['contour'] > 0)


@pytest.mark.parametrize('volume, match', [
    (np.zeros((8, 8)), '3-D'),
    (np.where(_solid() > 0, 40.0, -1000.0), 'looks like a CT in HU'),
    (np.where(_solid() > 0, 1064.0, 24.0) + np.arange(56) % 16, 'looks like a CT in HU'),
    ((_solid() > 0) * np.linspace(0.2, 0.9, 56), 'a probability map'),
    (np.zeros((8, 8, 8), np.uint8), 'empty leg'),
    (np.where(_solid() > 0, 5, 0), r'label values \[5\]'),
    (np.where(_solid() > 0, 255, 0).astype(np.uint8), r'label values \[255\]'),
])
def test_refusals_name_the_volume_and_the_values(volume, match):
  with pytest.raises(ValueError, match=match) as e:
    mm.masks_from_label_volume(volume, (H, H, H), GEO, name='leg.nii.gz')
  assert str(e.value).startswith('leg.nii.gz: ')


def test_a_leg_outside_the_field_is_refused_with_the_view_and_the_field():
  # 240 mm wide volume; the leg's centre 60 mm off the axis reaches 110 mm: the field is
  # 192 mm wide (96 mm radius).
  labels = _solid((48, 120, 120), dx=60.0)
  with pytest.raises(ValueError, match=r'outside the field of view.*192 mm wide') as e:
    mm.masks_from_label_volume(labels, (H, H, H), GEO)
  assert 'in the view at 0 deg (view 0' in str(e.value)
  assert 'right border' in str(e.value)  # +x is the column direction at 0 deg.


def _write(path, array_zyx, spacing_xyz, direction):
  img = sitk.GetImageFromArray(array_zyx)
  img.SetSpacing(spacing_xyz)
  img.SetDirection(direction)
  sitk.WriteImage(img, str(path))


@pytest.mark.parametrize('suffix, dtype', [('.nii.gz', np.uint8), ('.mha', np.float32),
                                           ('.nii', np.int16)])
def test_label_files_round_trip_in_ct_io_axes(tmp_path, suffix, dtype):
  labels = _solid()[:, :, :50]  # x shorter than y: axes cannot be confused.
  spacing = (2.5, 2.0, 1.75)  # (sz, sy, sx)
  # Stored in LPS (identity direction): y runs anterior -> posterior, the reverse of LAS.
  path = tmp_path / f'leg{suffix}'
  _write(path, labels[:, ::-1, :].astype(dtype), spacing[::-1], (1, 0, 0, 0, 1, 0, 0, 0, 1))
  got, got_spacing = mm.read_label_volume(path)
  np.testing.assert_array_equal(got, labels)
  assert got_spacing == spacing
  geo = GEO.with_detector(16)
  by_file = mm.masks_from_label_file(path, geo, [0.0, 90.0])
  direct = mm.masks_from_label_volume(labels, spacing, geo, [0.0, 90.0])
  for key in ('contour', 'contour_bone', 'image', 'angles_deg'):
    np.testing.assert_array_equal(by_file[key], direct[key])


def test_label_file_refusals_name_the_file(tmp_path):
  flat = tmp_path / 'slice.nii.gz'
  sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8), np.uint8)), str(flat))
  with pytest.raises(ValueError, match=r'slice\.nii\.gz: a 2-D image'):
    mm.read_label_volume(flat)
  ct = tmp_path / 'ct.nii.gz'
  _write(ct, np.where(_solid() > 0, 40.0, -1000.0).astype(np.float32), (H, H, H),
         (1, 0, 0, 0, 1, 0, 0, 0, 1))
  with pytest.raises(ValueError, match=r'ct\.nii\.gz: looks like a CT in HU.*from -1000 to 40'):
    mm.masks_from_label_file(ct, GEO)
  with pytest.raises(ValueError, match='no such label volume file'):
    mm.read_label_volume(tmp_path / 'missing.nii.gz')


# ----------------------------------------------------------------------- check_consistent


def _cylinder_views(geometry, a=55.0, b=45.0, centre=(12.0, -8.0)):
  """(V, H, W, 1) silhouettes of an elliptic cylinder along z (semi-axes a, b mm, centre
  (x, y) mm): a column is leg where its rays meet the ellipse (quadratic in the ray
  parameter), in every row since the cylinder runs on above and below."""
  r, d = geometry.source_to_isocentre_mm, geometry.source_to_detector_mm
  _, u = geometry.detector_coords_mm()
  views = []
  for t in np.deg2rad(geometry.angles_deg()):
    sx, sy = r * np.sin(t) - centre[0], -r * np.cos(t) - centre[1]
    dx, dy = d * -np.sin(t) + u * np.cos(t), d * np.cos(t) + u * np.sin(t)
    qa = (dx / a) ** 2 + (dy / b) ** 2
    qb = 2 * (sx * dx / a**2 + sy * dy / b**2)
    qc = (sx / a) ** 2 + (sy / b) ** 2 - 1
    hit = qb**2 - 4 * qa * qc > 0
    views.append(np.broadcast_to(hit, (geometry.detector_rows, u.size)))
  return np.stack(views)[..., None].astype(np.float32) * 0.5


def test_one_cylinder_agrees_and_a_shifted_view_is_off_by_its_shift():
  views = _cylinder_views(GEO)
  a = mm.check_consistent(views, GEO)
  assert a.pixels == 32 and a.excess_px.shape == a.iou.shape == (20,)
  # Exact silhouettes: within one pixel everywhere (the slack absorbs quantisation).
  assert a.excess_px.max() == 0.0 and a.iou.min() > 0.85, (a.excess_px, a.iou)
  for shift in (2, 3):
    moved = views.copy()
    moved[4] = np.roll(views[4], shift, axis=1)
    got = mm.view_agreement(moved, GEO)
    # Both vertical edges move by `shift` pixels: |symmetric difference| / edge length is
    # `shift`, and `shift` - 1 beyond the pixel of slack (give or take one edge's flip of
    # the hull's own quantisation, half a pixel).
    assert abs(got.offset_px[4] - shift) <= 0.5 and abs(got.excess_px[4] - (shift - 1)) <= 0.5
    assert np.argmax(got.excess_px) == 4
    with pytest.raises(ValueError, match=r'worst: view 4 at 72 deg \(IoU 0\.\d+, off by'):
      mm.check_consistent(moved, GEO)


@pytest.fixture(scope='module')
def phantom_masks():
  """contour_bone masks (20, 64, 64, 1) of phantom patients 0 and 3 (4 mm voxels): at
  64 px every bad set measured is refused (multiview_masks.TOLERANCE_PX)."""
  out = []
  for seed in (0, 3):
    ph = phantom.make_phantom(seed, spacing_mm=4.0)
    out.append(drr.scan_volume(ph.hu, ph.spacing_mm, GEO64).contour_bone[..., None])
  return out


def test_one_phantom_passes_and_mixed_views_are_named(phantom_masks):
  own, other = phantom_masks
  a = mm.check_consistent(own, GEO64)
  assert a.excess_px.max() < 0.02 and a.iou.min() > 0.96
  mm.check_consistent(other, GEO64)

  mixed = own.copy()
  mixed[5] = other[5]
  with pytest.raises(ValueError, match=r'not views of one body.*worst: view 5 at 90 deg'):
    mm.check_consistent(mixed, GEO64, what='masks of leg A')

  swapped = own.copy()
  swapped[[2, 9]] = own[[9, 2]]
  with pytest.raises(ValueError) as e:
    mm.check_consistent(swapped, GEO64)
  worst = str(e.value).split('worst: ')[1].split('), ')[:2]  # The two worst views.
  assert sorted(w.split(' (')[0] for w in worst) == ['view 2 at 36 deg', 'view 9 at 162 deg']

  flipped = own.copy()
  flipped[12] = own[12, ::-1]  # Upside down: thigh below, calf above.
  with pytest.raises(ValueError, match=r'worst: view 12 at 216 deg'):
    mm.check_consistent(flipped, GEO64)

  shuffled = own[np.random.default_rng(0).permutation(20)]
  with pytest.raises(ValueError, match=r'(1\d|20|[5-9]) of 20 views disagree'):
    mm.check_consistent(shuffled, GEO64)


def test_check_consistent_refuses_wrong_shapes_and_empty_sets():
  views = _cylinder_views(GEO)
  with pytest.raises(ValueError, match='19 masks for a scan of 20 angles'):
    mm.check_consistent(views[1:], GEO)
  with pytest.raises(ValueError, match='16 x 16 pixels for a 32 x 32 detector'):
    mm.check_consistent(views[:, ::2, ::2], GEO)
  with pytest.raises(ValueError, match=r'\(V, H, W, 1\)'):
    mm.check_consistent(views[..., 0], GEO)
  with pytest.raises(ValueError, match='no view holds any leg'):
    mm.check_consistent(np.zeros_like(views), GEO)


def test_large_detectors_are_checked_at_64_pixels():
  geo = dataclasses.replace(GEO.with_detector(128), num_views=20)
  a = mm.check_consistent(_cylinder_views(geo), geo)
  assert a.pixels == 64 and a.excess_px.max() == 0.0
