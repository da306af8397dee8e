"""Real leg CT import (docs/design.md, "Real CTs"): NIfTI, MetaImage, NRRD, DICOM series.

`load_ct` returns HU as float32 (z, y, x) on an isotropic grid in the LAS orientation: array
axis 0 runs inferior -> superior (along the limb), axis 1 posterior -> anterior, axis 2
right -> left, i.e. the same frame as `phantom.make_phantom` (+y anterior; +x lateral for a
left leg). Every fix applied to the data is reported in `CTVolume.notes`; data that cannot
be fixed raise `CTError` naming the file.
"""
import dataclasses
import os
import re

import numpy as np
import SimpleITK as sitk

from score_sde_knee.utils import files

SUFFIXES = ('.nii.gz', '.nii', '.mha', '.mhd', '.nrrd', '.nhdr')
_COMPANIONS = ('.raw', '.zraw', '.img', '.gz', '.bz2')  # Data files of .mhd/.nhdr headers.
_LAS = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # LPS directions of the LAS axes.
_UNSIGNED = ('auto', 'shift', 'keep', 'refuse')


class CTError(ValueError):
  """A CT file or series that cannot be used; the message names the path and the problem."""


@dataclasses.dataclass(frozen=True)
class CTVolume:
  """A CT volume ready for projection.

  Attributes:
    hu: float32 (z, y, x) Hounsfield units, >= -1000, LAS orientation (see module doc).
    spacing_mm: isotropic voxel size (sz, sy, sx) in mm.
    origin_mm: LPS position (x, y, z) in mm of the centre of voxel [0, 0, 0] as the header
      places it, before any upside-down turn.
    source: the file or DICOM directory read.
    notes: what was fixed or is doubtful, in the order it was done.
  """
  hu: np.ndarray
  spacing_mm: tuple[float, float, float]
  origin_mm: tuple[float, float, float]
  source: str
  notes: list[str]


def _suffix(path: str) -> str | None:
  low = path.lower()
  return next((s for s in SUFFIXES if low.endswith(s)), None)


def _read_file(path: str) -> sitk.Image:
  if _suffix(path) is None:
    raise CTError(f'{path}: unknown extension; expected one of {SUFFIXES} or a DICOM '
                  'series directory')
  try:
    return sitk.ReadImage(path)
  except RuntimeError as e:
    raise CTError(f'{path}: unreadable or corrupt file ({_first_line(e)})') from None


def _first_line(e: Exception) -> str:
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  return lines[-1] if lines else type(e).__name__


def _check_slices(path: str, names, notes) -> None:
  """Raises CTError on missing, duplicated or unevenly spaced DICOM slices."""
  reader = sitk.ImageFileReader()
  pos, normal = [], None
  for name in names:
    reader.SetFileName(name)
    try:
      reader.ReadImageInformation()
      ipp = [float(v) for v in reader.GetMetaData('0020|0032').split('\\')]
      if normal is None:
        iop = [float(v) for v in reader.GetMetaData('0020|0037').split('\\')]
        normal = np.cross(iop[:3], iop[3:6])
    except (RuntimeError, ValueError) as e:
      raise CTError(f'{name}: unreadable DICOM slice position/orientation '
                    f'({_first_line(e)})') from None
    pos.append(float(np.dot(ipp, normal)))
  d = np.diff(np.sort(pos))
  step = float(np.median(d))
  if d.min() < 1e-3 * max(step, 1e-6):
    raise CTError(f'{path}: duplicate DICOM slices at the same position '
                  f'({int((d < 1e-3 * max(step, 1e-6)).sum())} pairs)')
  if d.max() > 1.5 * step:
    k = int(np.argmax(d))
    raise CTError(f'{path}: missing DICOM slices: gap of {d.max():.3g} mm after slice '
                  f'{k} where the spacing is {step:.3g} mm')
  if d.max() - d.min() > 0.01 * step + 1e-3:
    raise CTError(f'{path}: uneven DICOM slice spacing, {d.min():.4g} to {d.max():.4g} mm')
  notes.append(f'DICOM series of {len(names)} slices, {step:.4g} mm apart')


def _read_dicom(path: str, series_id: str | None, notes) -> sitk.Image:
  ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(path)
  if not ids:
    raise CTError(f'{path}: directory holds no DICOM series')
  names = {i: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path, i) for i in ids}
  if series_id is not None:
    if series_id not in names:
      raise CTError(f'{path}: no DICOM series {series_id!r}; found {sorted(names)}')
    chosen = series_id
  else:
    chosen = max(sorted(names), key=lambda i: len(names[i]))
    if len(names) > 1:
      notes.append(f'{len(names)} DICOM series found {sorted(names)}; used {chosen} '
                   f'({len(names[chosen])} slices). A volume split in parts must be merged '
                   'by hand')
  if len(names[chosen]) < 2:
    raise CTError(f'{path}: DICOM series {chosen} has one slice: a 2-D image, not a volume')
  _check_slices(path, names[chosen], notes)
  reader = sitk.ImageSeriesReader()
  reader.SetFileNames(names[chosen])
  try:
    return reader.Execute()  # GDCM applies RescaleSlope/Intercept here.
  except RuntimeError as e:
    raise CTError(f'{path}: unreadable DICOM series ({_first_line(e)})') from None


def _resample(img: sitk.Image, h: float) -> sitk.Image:
  """Linear resampling onto an axis-aligned LAS grid of voxel size h over the same box."""
  size = np.array(img.GetSize())
  if np.allclose(img.GetSpacing(), h, rtol=0, atol=1e-6) and np.allclose(
      img.GetDirection(), _LAS, atol=1e-6):
    return img
  d_in = np.array(img.GetDirection()).reshape(3, 3)
  corners = np.array([[i, j, k] for i in (-0.5, size[0] - 0.5) for j in (-0.5, size[1] - 0.5)
                      for k in (-0.5, size[2] - 0.5)])
  phys = np.array(img.GetOrigin()) + (corners * img.GetSpacing()) @ d_in.T
  d_out = np.array(_LAS).reshape(3, 3)
  local = phys @ d_out  # Coordinates along the LAS axes.
  lo, hi = local.min(0), local.max(0)
  n = np.maximum(1, np.round((hi - lo) / h)).astype(int)
  first = (lo + hi) / 2 - (n - 1) * h / 2
  origin = d_out @ first
  return sitk.Resample(img, [int(v) for v in n], sitk.Transform(), sitk.sitkLinear,
                       origin.tolist(), (h, h, h), _LAS, -1000.0, sitk.sitkFloat32)


def _upside_down(hu: np.ndarray) -> tuple[bool, float]:
  """Thigh is wider than calf: compares body area in the top and bottom quarters."""
  area = (hu > -500).sum(axis=(1, 2)).astype(float)
  q = max(1, hu.shape[0] // 4)
  top, bottom = area[-q:].mean(), area[:q].mean()
  ratio = bottom / top if top > 0 else (np.inf if bottom > 0 else 1.0)
  return bool(ratio > 1.1), float(ratio)


def load_ct(path: str, *, spacing_mm: float = 1.0, flip_z: bool | None = None,
            unsigned: str = 'auto', series_id: str | None = None,
            max_hu: float = 5000.0) -> CTVolume:
  """Reads a CT volume as HU on an isotropic LAS grid (see module doc).

  Args:
    path: a .nii/.nii.gz/.mha/.mhd/.nrrd/.nhdr file, or a directory with a DICOM series.
    spacing_mm: output voxel size in mm (linear interpolation, -1000 outside).
    flip_z: True turns the volume 180 deg about the AP axis (z and x reversed: a volume
      stored upside down); False never; None decides from the body cross-section, which
      should be larger at the thigh (top) than at the calf: flips when the bottom quarter's
      mean body area (HU > -500) exceeds the top quarter's by more than 10 %.
    unsigned: storage as HU + 1024. 'auto' shifts by -1024 when the minimum is >= 0 (a leg
      CT always holds air or fat below 0 HU); 'shift' always shifts; 'keep' never; 'refuse'
      raises CTError when the minimum is >= 0.
    series_id: DICOM series to read; None = the one with the most slices.
    max_hu: largest plausible HU after fixes (metal implants may need more).

  Returns:
    A CTVolume; `notes` lists every fix applied.

  Raises:
    CTError: unreadable file, unknown extension, NaN/Inf voxels, empty or 2-D volume,
      missing/uneven DICOM slices or implausible HU, with the path in the message.
  """
  path = os.fspath(path)
  if unsigned not in _UNSIGNED:
    raise CTError(f'{path}: unsigned={unsigned!r}, expected one of {_UNSIGNED}')
  if not spacing_mm > 0:
    raise CTError(f'{path}: spacing_mm must be > 0, got {spacing_mm!r}')
  if not os.path.exists(path):
    raise CTError(f'{path}: no such file or directory')
  notes: list[str] = []
  img = _read_dicom(path, series_id, notes) if os.path.isdir(path) else _read_file(path)

  if img.GetNumberOfComponentsPerPixel() != 1:
    raise CTError(f'{path}: {img.GetNumberOfComponentsPerPixel()} components per voxel; '
                  'expected a scalar CT volume')
  size = img.GetSize()
  if 0 in size:
    raise CTError(f'{path}: empty volume (size {size})')
  if img.GetDimension() == 2 or min(size) == 1:
    raise CTError(f'{path}: a 2-D image (size {size}), expected a 3-D volume with every '
                  'dimension > 1')
  if img.GetDimension() != 3:
    raise CTError(f'{path}: a {img.GetDimension()}-D image, expected a 3-D volume')
  was = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection())
  if was != 'LAS':
    img = sitk.DICOMOrient(img, 'LAS')
    notes.append(f'reoriented {was} -> LAS')

  arr = sitk.GetArrayFromImage(img).astype(np.float32)
  bad = int(np.size(arr) - np.isfinite(arr).sum())
  if bad:
    raise CTError(f'{path}: {bad} NaN/Inf voxels')
  lo, hi = float(arr.min()), float(arr.max())
  if lo == hi:
    raise CTError(f'{path}: empty volume, every voxel is {lo:g}')
  if unsigned == 'refuse' and lo >= 0:
    raise CTError(f'{path}: looks like unsigned storage (HU + 1024): minimum {lo:g} >= 0')
  if unsigned == 'shift' or (unsigned == 'auto' and lo >= 0):
    vals, counts = np.unique(np.round(arr[::4, ::4, ::4]), return_counts=True)
    arr -= 1024.0
    notes.append(f'unsigned storage: subtracted 1024 (minimum {lo:g}, histogram mode '
                 f'{vals[np.argmax(counts)]:g})')
  low = int((arr < -1000).sum())
  if low:
    notes.append(f'clamped {low} voxels below -1000 HU (padding; minimum {arr.min():g})')
    np.maximum(arr, -1000.0, out=arr)
  lo, hi = float(arr.min()), float(arr.max())
  if hi < 0 or lo > 500 or hi > max_hu:
    raise CTError(f'{path}: implausible HU range [{lo:g}, {hi:g}] after fixes; expected air '
                  f'or fat below 500, some tissue above 0 and nothing above {max_hu:g} (raise '
                  'max_hu for metal; check unsigned=)')

  fixed = sitk.GetImageFromArray(arr)
  fixed.CopyInformation(img)
  out = _resample(fixed, float(spacing_mm))
  if out is not fixed:
    notes.append(f'resampled spacing {tuple(round(s, 4) for s in img.GetSpacing())} -> '
                 f'{spacing_mm:g} mm isotropic (linear)')
  hu = sitk.GetArrayFromImage(out).astype(np.float32)
  origin = out.GetOrigin()
  upside, ratio = _upside_down(hu)
  if flip_z or (flip_z is None and upside):
    hu = np.ascontiguousarray(hu[::-1, :, ::-1])
    why = 'forced' if flip_z else f'bottom/top body area {ratio:.2f} > 1.1'
    notes.append(f'turned 180 deg about the AP axis (upside down: {why})')
  elif flip_z is None:
    notes.append(f'orientation kept: bottom/top body area {ratio:.2f}')
  h = float(spacing_mm)
  return CTVolume(hu=hu, spacing_mm=(h, h, h), origin_mm=tuple(float(v) for v in origin),
                  source=path, notes=notes)


def _case_id(rel: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.-]+', '_', rel).strip('_') or 'case'


def find_ct_cases(manual_dir: str) -> list[tuple[str, str]]:
  """Lists CT files and DICOM series directories under `manual_dir`, sorted by case id.

  A case id is the path relative to `manual_dir` without the extension, with anything but
  letters, digits, '.', '-' and '_' replaced by '_'. A directory counts as one case when
  GDCM finds a DICOM series in it (files with other extensions are ignored).
  """
  manual_dir = os.fspath(manual_dir)
  if not os.path.isdir(manual_dir):
    raise CTError(f'{manual_dir}: manual directory not found')
  cases = {}
  for root, dirs, names in os.walk(manual_dir):
    dirs.sort()
    rel_root = os.path.relpath(root, manual_dir)
    others = False
    for name in sorted(names):
      if name.startswith('.'):
        continue
      suffix = _suffix(name)
      if suffix is not None:
        rel = os.path.normpath(os.path.join(rel_root, name[:-len(suffix)]))
        key = _case_id(rel)
        cases[key + suffix.replace('.', '_') if key in cases else key] = os.path.join(root, name)
      elif not name.lower().endswith(_COMPANIONS + ('.txt', '.json', '.md', '.csv')):
        others = True
    if others and sitk.ImageSeriesReader.GetGDCMSeriesIDs(root):
      rel = os.path.basename(os.path.abspath(manual_dir)) if rel_root == '.' else rel_root
      key = _case_id(rel)
      cases[key + '_dicom' if key in cases else key] = root
  return sorted(cases.items())


def write_ct(path: str, hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> None:
  """Writes a (z, y, x) LAS volume (e.g. a phantom's HU) as NIfTI or any SimpleITK format
  (by extension), centred on the origin, atomically; `load_ct` gives back the same array.

  The physical frame is LPS with +x = left (a left knee: lateral) and +y = anterior, so the
  y axis' direction is (0, -1, 0).
  """
  img = sitk.GetImageFromArray(np.ascontiguousarray(hu, np.float32))
  sz, sy, sx = spacing_mm
  nz, ny, nx = hu.shape
  img.SetSpacing((sx, sy, sz))
  img.SetDirection(_LAS)
  x0, y0, z0 = (-(n - 1) * h / 2 for n, h in ((nx, sx), (ny, sy), (nz, sz)))
  img.SetOrigin((x0, -y0, z0))
  suffix = '.nii.gz' if str(path).endswith('.nii.gz') else '.' + str(path).rsplit('.', 1)[-1]
  with files.atomic_path(path, suffix) as tmp:
    sitk.WriteImage(img, tmp, True)
