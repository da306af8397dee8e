"""Tests of legs.split_legs on synthetic CTs: two legs on a table, one leg off centre,
touching legs, and the refusals. Volumes are written to disk and read by ct_io.load_ct, so
the sides are checked through the file's physical frame (LPS: +x is the patient's left).
"""
import numpy as np
import pytest
import SimpleITK as sitk

from score_sde_knee.xray import ct_io
from score_sde_knee.xray import legs

H = 3.0  # mm
SHAPE = (40, 64, 64)  # (z, y, x)
R_LEFT, R_RIGHT = 27.0, 21.0  # soft-tissue radii (mm): tell the legs apart
LEFT_X, RIGHT_X, LEG_Y = 45.0, -42.0, 12.0  # LPS x of the axes; y towards anterior


def _grid():
  nz, ny, nx = SHAPE
  y = (np.arange(ny) - (ny - 1) / 2) * H  # array y: posterior -> anterior
  x = (np.arange(nx) - (nx - 1) / 2) * H  # array x: right -> left (= LPS x)
  return np.meshgrid(y, x, indexing='ij')


def _volume(cylinders, table_top_y=None, seed=0):
  """(z, y, x) HU: soft tissue (40) with bone (800) along z, a dense plate, noise."""
  y, x = _grid()
  sl = np.full(SHAPE[1:], -1000.0)
  if table_top_y is not None:
    sl[(y <= table_top_y) & (y > table_top_y - 2 * H)] = 300.0  # 6 mm, the whole width
  for cx, cy, r in cylinders:
    d = np.hypot(x - cx, y - cy)
    sl[d <= r] = 40.0
    sl[d <= r / 3] = 800.0
  vol = np.repeat(sl[None], SHAPE[0], axis=0)
  return (vol + np.random.default_rng(seed).normal(0, 10, vol.shape)).astype(np.float32)


def _two_legs(table_top_y):
  return _volume([(LEFT_X, LEG_Y, R_LEFT), (RIGHT_X, LEG_Y, R_RIGHT)], table_top_y)


def _write_ras(path, vol):
  """Stored with x running left -> right (RAS): load_ct must turn it back to LAS."""
  img = sitk.GetImageFromArray(np.ascontiguousarray(vol[:, :, ::-1]))
  img.SetSpacing((H, H, H))
  img.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
  nz, ny, nx = vol.shape
  img.SetOrigin(((nx - 1) / 2 * H, (ny - 1) / 2 * H, -(nz - 1) / 2 * H))
  sitk.WriteImage(img, path)


def _load(tmp_path, vol, ras=False):
  path = str(tmp_path / 'knees.nii.gz')
  (_write_ras if ras else lambda p, v: ct_io.write_ct(p, v, (H, H, H)))(path, vol)
  return ct_io.load_ct(path, spacing_mm=H, flip_z=False)


def _body_centroid(hu):
  _, y, x = np.nonzero(hu > -500)
  return y.mean(), x.mean()


@pytest.mark.parametrize('gap_mm,ras', [(6.0, False), (0.0, True)])
def test_two_legs_on_a_table(tmp_path, gap_mm, ras):
  bottom = LEG_Y - R_LEFT
  ct = _load(tmp_path, _two_legs(bottom - gap_mm), ras)
  assert (ct.hu[:, :, 0] > -500).any()  # the table reaches the border before the split
  assert any(n.startswith('reoriented') for n in ct.notes) == ras
  cases = legs.split_legs(ct)
  assert [c.side for c in cases] == ['right', 'left']
  for case, r, x0 in zip(cases, (R_RIGHT, R_LEFT), (RIGHT_X, LEFT_X)):
    hu = case.ct.hu
    body = hu > -500
    ny, nx = hu.shape[1:]
    # Centred: the body's axial centroid within one voxel of the orbit's axis.
    cy, cx = _body_centroid(hu)
    assert abs(cy - (ny - 1) / 2) <= 1 and abs(cx - (nx - 1) / 2) <= 1
    assert case.shift_mm[0] == pytest.approx(-x0, abs=H) and \
        case.shift_mm[1] == pytest.approx(-LEG_Y, abs=H)
    # Only this leg is left: its disc's area per slice, its width; no plate, no other leg.
    area = body.sum(axis=(1, 2)) * H * H
    np.testing.assert_allclose(area, np.pi * r * r, rtol=0.12)
    xs = np.nonzero(body.any(axis=(0, 1)))[0]
    assert (xs[-1] - xs[0] + 1) * H <= 2 * r + 2 * H
    assert (hu > 500).sum(axis=(1, 2)).min() > 0  # its bone is there
    # HU are copied: the output is the input moved by the recorded integer shift.
    # Output (y, x) centre = input centre + (dy, dx): the indices below are whole numbers.
    ny_in, nx_in = ct.hu.shape[1:]
    dx, dy = (s / H for s in case.shift_mm)
    z, y, x = np.nonzero(body)
    y_in = (y - (ny - 1) / 2 + (ny_in - 1) / 2 - dy).astype(int)
    x_in = (x - (nx - 1) / 2 + (nx_in - 1) / 2 - dx).astype(int)
    np.testing.assert_array_equal(hu[z, y, x], ct.hu[z, y_in, x_in])
    notes = ' | '.join(case.ct.notes)
    assert 'table removed' in notes and f'{case.side} leg of a two-leg volume' in notes
    assert 'centred: shifted by' in notes
    assert case.ct.notes[:len(ct.notes)] == ct.notes


def test_one_leg_off_centre_is_centred(tmp_path):
  ct = _load(tmp_path, _volume([(30.0, -20.0, 24.0)]))
  cy, cx = _body_centroid(ct.hu)
  assert abs(cx - 31.5) > 8  # off centre before
  (case,) = legs.split_legs(ct)
  assert case.side == 'single'
  cy, cx = _body_centroid(case.ct.hu)
  ny, nx = case.ct.hu.shape[1:]
  assert abs(cy - (ny - 1) / 2) <= 1 and abs(cx - (nx - 1) / 2) <= 1
  assert case.shift_mm == pytest.approx((-30.0, 20.0), abs=H)
  assert 'one leg' in case.ct.notes and not any('table' in n for n in case.ct.notes)


def test_touching_legs_are_cut_apart(tmp_path):
  vol = _volume([(27.0, 0.0, 27.0), (-27.0, 0.0, 27.0)])
  vol[:8, 22:42, 28:36] = 40.0  # the thighs touch over the top slices
  ct = _load(tmp_path, vol[::-1].copy())  # thigh at the top
  right, left = legs.split_legs(ct)
  assert any('two legs touching' in n for n in left.ct.notes)
  for case in (right, left):
    assert case.shift_mm[0] == pytest.approx(27.0 if case is right else -27.0, abs=H)


def test_no_leg_or_three_is_refused_with_the_file(tmp_path):
  ct = _load(tmp_path, _volume([], table_top_y=-40.0))  # only a table
  with pytest.raises(ct_io.CTError, match=r'knees\.nii\.gz: no leg found'):
    legs.split_legs(ct)
  ct = _load(tmp_path, _volume([(-60.0, 0, 20.0), (0.0, 0, 20.0), (60.0, 0, 20.0)]))
  with pytest.raises(ct_io.CTError, match=r'knees\.nii\.gz: 3 large body components'):
    legs.split_legs(ct)
