"""Tests of real-CT import: formats, HU fixes, orientation, spacing and every error case.

Volumes are written by SimpleITK from an analytic function of LPS position, so the loaded
array can be checked against that function at the output grid's positions (computed here
from origin and spacing, LAS axes), independently of the resampling code.
"""
import os
import re

import numpy as np
import pytest
import SimpleITK as sitk

from score_sde_knee.xray import ct_io
from score_sde_knee.xray import phantom
from score_sde_knee.xray.ct_io import CTError

SHAPE = (14, 12, 10)  # (z, y, x) voxels as stored.
SPACING = (1.5, 1.25, 2.0)  # (sx, sy, sz) mm.
ORIGIN = (-7.0, 5.0, 12.0)
TILTED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # Stored as R->L flipped, feet up.


def _ramp(x, y, z):
  """HU as a linear function of LPS mm (exact under linear interpolation)."""
  return 3.0 * x - 2.0 * y + 5.0 * z + 100.0


def _image(fn, direction=TILTED, spacing=SPACING, origin=ORIGIN, shape=SHAPE,
           dtype=np.float32):
  img = sitk.Image([shape[2], shape[1], shape[0]], sitk.sitkFloat32)
  img.SetSpacing(spacing); img.SetOrigin(origin); img.SetDirection(direction)
  k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing='ij')
  idx = np.stack([i, j, k], -1).reshape(-1, 3).astype(float)
  phys = np.array(origin) + (idx * spacing) @ np.array(direction).reshape(3, 3).T
  arr = fn(*phys.T).reshape(shape).astype(dtype)
  out = sitk.GetImageFromArray(arr)
  out.CopyInformation(img)
  return out


def _las_positions(vol: ct_io.CTVolume):
  """LPS (x, y, z) of every voxel centre of a loaded volume, each of shape hu.shape."""
  h = vol.spacing_mm[0]
  ox, oy, oz = vol.origin_mm
  nz, ny, nx = vol.hu.shape
  z, y, x = np.meshgrid(oz + h * np.arange(nz), oy - h * np.arange(ny),
                        ox + h * np.arange(nx), indexing='ij')
  return x, y, z


def _check_ramp(vol, atol):
  x, y, z = _las_positions(vol)
  inner = (slice(1, -1),) * 3  # The border voxels see the -1000 background.
  np.testing.assert_allclose(vol.hu[inner], _ramp(x, y, z)[inner], atol=atol)


@pytest.mark.parametrize('suffix', ['.nii.gz', '.nii', '.mha', '.mhd', '.nrrd'])
def test_file_formats_hu_spacing_orientation(tmp_path, suffix):
  path = str(tmp_path / f'leg{suffix}')
  sitk.WriteImage(_image(_ramp), path)
  vol = ct_io.load_ct(path, spacing_mm=1.0, flip_z=False)
  assert vol.hu.dtype == np.float32 and vol.spacing_mm == (1.0, 1.0, 1.0)
  assert vol.source == path
  # Physical extent is kept: 10 x 1.5, 12 x 1.25, 14 x 2 mm.
  assert vol.hu.shape == (28, 15, 15)
  _check_ramp(vol, atol=1e-3)
  assert any('LAS' in n for n in vol.notes) and any('resampled' in n for n in vol.notes)


def test_asymmetric_marker_lands_at_expected_index(tmp_path):
  # A bright block at the superior, anterior, left corner of the LPS box.
  def marker(x, y, z):
    hit = (x > 2) & (x < 6) & (y > -8) & (y < -4) & (z > 0) & (z < 6)
    return np.where(hit, 1500.0, np.where((z < -10), -1000.0, 40.0))
  path = str(tmp_path / 'marker.nii.gz')
  sitk.WriteImage(_image(marker, spacing=(1.0, 1.0, 1.0), origin=(12, -15, 20),
                         shape=(40, 30, 24)), path)
  vol = ct_io.load_ct(path, flip_z=False)
  ox, oy, oz = vol.origin_mm
  k, j, i = np.argwhere(vol.hu > 1000).mean(0)
  # LAS: index i -> +x (left), j -> -y (anterior), k -> +z (superior).
  assert abs(ox + i - 4) < 0.6 and abs(oy - j - (-6)) < 0.6 and abs(oz + k - 3) < 0.6
  assert k > vol.hu.shape[0] / 2 and j > vol.hu.shape[1] / 2 and i > vol.hu.shape[2] / 2


def _write_dicom(directory, img, *, intercept=-1024, slope=1, z_jitter=None, drop=None):
  """One file per slice with ImagePosition/Orientation and RescaleIntercept/Slope tags."""
  os.makedirs(directory)
  writer = sitk.ImageFileWriter()
  writer.KeepOriginalImageUIDOn()
  d = img.GetDirection()
  for k in range(img.GetSize()[2]):
    if k == drop:
      continue
    s = img[:, :, k]
    pos = list(img.TransformIndexToPhysicalPoint((0, 0, k)))
    if z_jitter is not None and k == 3:
      pos[2] += z_jitter
    tags = {'0008|0060': 'CT', '0020|000d': '1.2.826.0.1.1', '0020|000e': '1.2.826.0.1.1.2',
            '0020|0037': '\\'.join(map(str, d[0:7:3] + d[1:8:3])),
            '0020|0032': '\\'.join(map(str, pos)), '0020|0013': str(k),
            '0028|1052': str(intercept), '0028|1053': str(slope)}
    for tag, value in tags.items():
      s.SetMetaData(tag, value)
    writer.SetFileName(os.path.join(directory, f'{k:03d}.dcm'))
    writer.Execute(s)


def test_dicom_series_rescale_direction_spacing(tmp_path):
  img = _image(lambda x, y, z: np.round(_ramp(x, y, z)), dtype=np.int16)
  d = str(tmp_path / 'dcm')
  _write_dicom(d, img)
  # GDCM stored HU + 1024 (the intercept is really used): check a slice's raw pixels.
  raw = open(os.path.join(d, '005.dcm'), 'rb').read()[-SHAPE[1] * SHAPE[2] * 2:]
  stored = np.frombuffer(raw, '<u2').reshape(SHAPE[1:])
  np.testing.assert_array_equal(stored, sitk.GetArrayFromImage(img)[5] + 1024)
  vol = ct_io.load_ct(d, flip_z=False)
  assert vol.hu.shape == (28, 15, 15)
  _check_ramp(vol, atol=1.01)  # Integer rounding of the stored values.
  assert any('DICOM series of 14 slices' in n for n in vol.notes)


@pytest.mark.parametrize('kind,match', [('drop', 'missing DICOM slices'),
                                        ('jitter', 'uneven DICOM slice spacing')])
def test_dicom_missing_or_uneven_slices(tmp_path, kind, match):
  img = _image(lambda x, y, z: np.round(_ramp(x, y, z)), dtype=np.int16)
  d = str(tmp_path / 'bad')
  _write_dicom(d, img, drop=6 if kind == 'drop' else None,
               z_jitter=0.4 if kind == 'jitter' else None)
  with pytest.raises(CTError, match=re.escape(d) + '.*' + match):
    ct_io.load_ct(d)


def _leg(x, y, z):
  """Body of radius growing toward +z (thigh up), a bone rod and an asymmetric marker."""
  r = np.hypot(x, y)
  hu = np.where(r < 14 + 0.3 * z, 40.0, -1000.0)
  hu = np.where(r < 4, 1200.0, hu)
  return np.where((x > 6) & (y < -6) & (z > 8), 700.0, hu)


def test_unsigned_storage_and_padding(tmp_path):
  direction = (1, 0, 0, 0, 1, 0, 0, 0, 1)
  signed = _image(_leg, direction=direction, spacing=(1, 1, 1), origin=(-15, -15, -20),
                  shape=(40, 30, 30))
  ref = sitk.GetArrayFromImage(signed)
  path = str(tmp_path / 'unsigned.mha')
  sitk.WriteImage(sitk.Cast(signed + 1024, sitk.sitkUInt16), path)
  vol = ct_io.load_ct(path, flip_z=False)
  np.testing.assert_array_equal(vol.hu, ref[:, ::-1, :])  # LPS -> LAS flips y.
  assert any('unsigned' in n for n in vol.notes)
  with pytest.raises(CTError, match=re.escape(path) + '.*unsigned'):
    ct_io.load_ct(path, unsigned='refuse')
  kept = ct_io.load_ct(path, unsigned='keep', flip_z=False)
  np.testing.assert_array_equal(kept.hu, ref[:, ::-1, :] + 1024)
  # Scanner padding -3024 outside the body is clamped to -1000.
  padded = str(tmp_path / 'padded.nrrd')
  sitk.WriteImage(sitk.Cast(sitk.Mask(signed, signed > -1000, -3024), sitk.sitkInt16), padded)
  vol = ct_io.load_ct(padded, flip_z=False)
  assert vol.hu.min() == -1000.0
  np.testing.assert_array_equal(vol.hu, ref[:, ::-1, :])
  assert any('clamped' in n and '-3024' in n for n in vol.notes)


def test_upside_down_heuristic(tmp_path):
  kw = dict(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), spacing=(1, 1, 1), origin=(-15, -15, -20),
            shape=(40, 30, 30))
  img = _image(_leg, **kw)
  right, wrong = str(tmp_path / 'right.nii.gz'), str(tmp_path / 'wrong.nii.gz')
  sitk.WriteImage(img, right)
  # Stored upside down: turned 180 deg about the AP axis, header unchanged.
  turned = sitk.GetImageFromArray(sitk.GetArrayFromImage(img)[::-1, :, ::-1].copy())
  turned.CopyInformation(img)
  sitk.WriteImage(turned, wrong)
  good = ct_io.load_ct(right)
  assert not any('turned' in n for n in good.notes)
  fixed = ct_io.load_ct(wrong)
  assert any('turned 180' in n for n in fixed.notes)
  np.testing.assert_array_equal(fixed.hu, good.hu)
  as_is = ct_io.load_ct(wrong, flip_z=False)
  np.testing.assert_array_equal(as_is.hu, good.hu[::-1, :, ::-1])
  forced = ct_io.load_ct(right, flip_z=True)
  np.testing.assert_array_equal(forced.hu, good.hu[::-1, :, ::-1])


def test_phantom_nifti_loads_back_unchanged(tmp_path):
  ph = phantom.make_phantom(2, spacing_mm=4.0)
  path = str(tmp_path / 'p2.nii.gz')
  ct_io.write_ct(path, ph.hu, ph.spacing_mm)
  vol = ct_io.load_ct(path, spacing_mm=4.0)
  np.testing.assert_array_equal(vol.hu, ph.hu)
  assert vol.notes == ['orientation kept: bottom/top body area ' +
                       vol.notes[0].rsplit(' ', 1)[-1]]


def _write(path, arr, spacing=(1.0, 1.0, 1.0)):
  img = sitk.GetImageFromArray(arr)
  img.SetSpacing(spacing[:img.GetDimension()])
  sitk.WriteImage(img, path)
  return path


def _body(shape=(8, 8, 8)):
  a = np.full(shape, -1000.0, np.float32)
  a[2:-2, 2:-2, 2:-2] = 40.0
  return a


@pytest.mark.parametrize('case,match', [
    ('missing', 'no such file'),
    ('extension', 'unknown extension'),
    ('corrupt', 'unreadable or corrupt'),
    ('nan', 'NaN/Inf'),
    ('inf', 'NaN/Inf'),
    ('constant', 'empty volume'),
    ('flat', '2-D'),
    ('image2d', '2-D'),
    ('negative', 'implausible HU'),
    ('dense', 'implausible HU'),
    ('huge', 'implausible HU'),
    ('empty_dir', 'no DICOM series'),
])
def test_errors_name_the_file(tmp_path, case, match):
  p = str(tmp_path / f'{case}.nii.gz')
  kw = {}
  if case == 'missing':
    p = str(tmp_path / 'nothing_here.nii')
  elif case == 'extension':
    p = str(tmp_path / 'vol.xyz'); open(p, 'w').write('x')
  elif case == 'corrupt':
    open(p, 'wb').write(b'\x1f\x8b not really gzip' * 20)
  elif case in ('nan', 'inf'):  # MetaImage: ITK's NIfTI reader turns NaN into 0.
    p = p.replace('.nii.gz', '.mha')
    a = _body(); a[4, 4, 4] = np.nan if case == 'nan' else np.inf; _write(p, a)
  elif case == 'constant':
    _write(p, np.full((6, 6, 6), -1000.0, np.float32))
  elif case == 'flat':
    _write(p, _body((1, 8, 8)))
  elif case == 'image2d':
    _write(p, _body((1, 8, 8))[0])
  elif case == 'negative':
    _write(p, np.where(_body() > 0, -50.0, -1000.0).astype(np.float32))
  elif case == 'dense':
    _write(p, _body() + 1700.0); kw = dict(unsigned='keep')
  elif case == 'huge':
    a = _body(); a[4, 4, 4] = 9000.0; _write(p, a)
  elif case == 'empty_dir':
    p = str(tmp_path / 'emptydir'); os.makedirs(p)
  with pytest.raises(CTError, match=re.escape(p) + '.*' + match):
    ct_io.load_ct(p, **kw)


def test_find_ct_cases(tmp_path):
  root = tmp_path / 'manual'
  (root / 'sub').mkdir(parents=True)
  _write(str(root / 'b knee.nii.gz'), _body())
  _write(str(root / 'sub' / 'a.mha'), _body())
  _write(str(root / 'c.mhd'), _body())  # Also writes c.raw / c.zraw.
  (root / 'README.txt').write_text('notes')
  _write_dicom(str(root / 'dicom' / 'series1'),
               _image(lambda x, y, z: np.round(_ramp(x, y, z)), dtype=np.int16))
  cases = ct_io.find_ct_cases(str(root))
  assert [c for c, _ in cases] == ['b_knee', 'c', 'dicom_series1', 'sub_a']
  assert dict(cases)['dicom_series1'] == str(root / 'dicom' / 'series1')
  assert dict(cases)['sub_a'] == str(root / 'sub' / 'a.mha')
  assert ct_io.find_ct_cases(str(root)) == cases
  with pytest.raises(CTError, match='nowhere'):
    ct_io.find_ct_cases(str(tmp_path / 'nowhere'))


def test_write_ct_round_trip(tmp_path):
  ph = phantom.make_phantom(5, spacing_mm=4.0)
  path = tmp_path / 'p5.nii.gz'
  ct_io.write_ct(str(path), ph.hu, ph.spacing_mm)
  assert os.listdir(tmp_path) == ['p5.nii.gz']
  img = sitk.ReadImage(str(path))
  np.testing.assert_array_equal(sitk.GetArrayFromImage(img), ph.hu)
  np.testing.assert_allclose(img.GetSpacing(), (4, 4, 4))
  nz, ny, nx = ph.hu.shape
  k, j, i = 3, 5, 7
  want = ((i + 0.5) * 4 - nx * 2, -((j + 0.5) * 4 - ny * 2), (k + 0.5) * 4 - nz * 2)
  np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((i, j, k)), want, atol=1e-4)
