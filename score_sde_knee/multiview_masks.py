"""A leg's 60 masks from a 3-D label volume, and a check that a mask set is one body's views.

`masks_from_label_volume` turns a label volume (air 0, soft tissue 1, bone 2), e.g. a
segmentation drawn in a viewer, into the contour and contour_bone masks of every view of
the scan, made by the code that makes knee_drr's masks from a CT (drr.scan_volume): each
label becomes a nominal HU and the volume is scanned like a CT. The masks are then
projections of one body by construction, which is what multiview.py's joint sampling
assumes of its conditions.

`check_consistent` refuses a mask set whose views are not silhouettes of one body in the
geometry (views shuffled, one from another patient, one flipped): for every view v it
carves the visual hull of the other views' silhouettes on a coarse grid, re-projects that
hull into view v and compares it with v's own silhouette: the mean offset between their
edges in pixels beyond one pixel of slack (the quantisation of binary masks) decides; the
IoU and the plain mean edge offset are reported too.
Leave-one-out rather than one hull of all views because a bad view carves the common hull
and so lowers the agreement of the good views too; the hull of the others leaves the bad
view alone in disagreement.
"""
from collections.abc import Sequence
import dataclasses
import functools
import math
import os

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import SimpleITK as sitk

from score_sde_knee import multiview
from score_sde_knee.xray import drr
from score_sde_knee.xray import geometry as geometry_lib

AIR, SOFT_TISSUE, BONE = 0, 1, 2
# Nominal HU per label. Hounsfield-scale tables (e.g. Wikipedia's "Hounsfield unit": muscle
# +35 to +55, fat -120 to -90, cancellous bone +300 to +400, cortical bone +500 to +1900)
# and the phantom's ranges (phantom.sample_params: muscle 45-55, skin 25-55, trabecular bone
# 240-320, cortex 1280-1720). Only the DRR kept for reference depends on them: the contour
# is the DRR above 10 % of its maximum (0.1 of a path through bone, which any soft-tissue
# chord but the outermost millimetre exceeds), and the bone mask needs only bone >= 200 HU.
LABEL_HU = {AIR: -1000.0, SOFT_TISSUE: 40.0, BONE: 700.0}
# LPS direction cosines of ct_io's LAS axes (x right -> left, y posterior -> anterior).
_LAS = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)

# check_consistent refuses a view whose silhouette and the projection of the visual hull of
# the other views disagree by more than TOLERANCE_PX: the pixels of either that lie more
# than one pixel (3 x 3 neighbourhood) from the other, per pixel of the silhouette's edge.
# The pixel of slack absorbs the quantisation of binary masks: an edge may sit anywhere in
# its pixel, and along a straight vertical edge every row flips together (the exact views
# of an elliptic cylinder differ from its hull's projection by up to a whole pixel per edge,
# and are one body). Measured at n = 48: one body's views (phantom seeds 0-7 at 3 mm voxels,
# contour_bone; exact elliptic cylinders; cylinder label volumes through
# masks_from_label_volume) <= 0.008 px, mostly 0.000. The worst view of a bad set, min /
# median over 8 phantom patients:
#   detector, views      another patient's view  flipped L-R  flipped U-D  2 views swapped
#   64 px, 60            0.35 / 1.81             0.23 / 2.46  0.87 / 1.65  1.26 / 2.87
#   64 px, 20            0.26 / 1.45             0.12 / 1.57  1.38 / 2.45  0.91 / 2.38
#   256 px (at 64), 60   0.31 / 1.80             0.21 / 2.52  0.87 / 1.65  1.26 / 2.89
#   32 px, 60            0.00 / 0.44             0.00 / 0.73  0.17 / 0.34  0.30 / 0.97
#   32 px, 20            0.00 / 0.40             0.00 / 0.35  0.28 / 0.80  0.33 / 0.69
# Every bad set at 64 px and above is refused. At 32 px a similar patient's view, or the
# mirror image of a nearly symmetric leg, lies within a pixel (6 mm at the isocentre) of
# the truth: 10-25 % of those pass, and no silhouette test at that size could tell them.
TOLERANCE_PX = 0.05
CHECK_PX = 64  # Larger detectors are checked at this size (view_agreement).
GRID_N = 48  # Hull grid n^3 over the field of view (multiview.volume_grid): 4 mm voxels.


# ------------------------------------------------------------------- label volume to masks


def read_label_volume(path) -> tuple[np.ndarray, tuple[float, float, float]]:
  """Reads a label volume (.nii/.nii.gz/.mha/.mhd, anything SimpleITK reads) as
  (labels (z, y, x) int8 in LAS orientation as ct_io.load_ct's axes, spacing (z, y, x) mm).

  The voxels are kept as stored (no resampling: labels must not be interpolated), turned
  into LAS by axis permutations and flips only; an oblique volume is refused.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such label volume file')
  try:
    img = sitk.ReadImage(path)
  except RuntimeError as e:
    raise ValueError(f'{path}: unreadable label volume ({_last_line(e)})') from None
  if img.GetNumberOfComponentsPerPixel() != 1:
    raise ValueError(f'{path}: {img.GetNumberOfComponentsPerPixel()} components per voxel; '
                     'expected one label per voxel')
  if img.GetDimension() != 3:
    raise ValueError(f'{path}: a {img.GetDimension()}-D image of size {img.GetSize()}, '
                     'expected a 3-D label volume (z, y, x)')
  img = sitk.DICOMOrient(img, 'LAS')
  if not np.allclose(img.GetDirection(), _LAS, atol=1e-3):
    raise ValueError(f'{path}: oblique volume (direction {img.GetDirection()}); resample '
                     'the labels (nearest neighbour) onto axis-aligned axes first')
  labels = check_labels(sitk.GetArrayFromImage(img), path)
  sx, sy, sz = (float(s) for s in img.GetSpacing())
  return labels, (sz, sy, sx)


def _last_line(e: Exception) -> str:
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  return lines[-1] if lines else type(e).__name__


def check_labels(labels, name: str = 'labels') -> np.ndarray:
  """The labels as int8 if they are a 3-D volume of {0, 1, 2} holding some leg, else a
  ValueError naming `name` and what the values look like."""
  arr = np.asarray(labels)
  if arr.ndim != 3:
    raise ValueError(f'{name}: label volume must be 3-D (z, y, x), got shape {arr.shape}')
  if arr.size == 0:
    raise ValueError(f'{name}: empty label volume (shape {arr.shape})')
  if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
          or arr.dtype == bool):
    raise ValueError(f'{name}: label volume of dtype {arr.dtype}, expected integers')
  if arr.dtype.kind == 'f' and not np.all(np.isfinite(arr)):
    raise ValueError(f'{name}: {int(arr.size - np.isfinite(arr).sum())} NaN/Inf voxels in '
                     'the label volume')
  lo, hi = float(arr.min()), float(arr.max())
  values = np.unique(arr)
  # A 0/255 binary mask also exceeds 100, but with 2 values: a CT has a whole range.
  if lo < -500 or (hi > 100 and values.size > 8):
    raise ValueError(f'{name}: looks like a CT in HU, not a label volume (values from '
                     f'{lo:g} to {hi:g}; expected air 0, soft tissue 1, bone 2): scan a CT '
                     'with drr.scan_volume instead')
  if arr.dtype.kind == 'f' and np.any(values != np.round(values)):
    if lo >= 0 and hi <= 1:
      raise ValueError(f'{name}: non-integer values in [{lo:g}, {hi:g}]: a probability map? '
                       'Expected labels air 0, soft tissue 1, bone 2 (threshold it first)')
    raise ValueError(f'{name}: non-integer values from {lo:g} to {hi:g}; expected labels '
                     'air 0, soft tissue 1, bone 2')
  bad = [v for v in values.tolist() if v not in (AIR, SOFT_TISSUE, BONE)]
  if bad:
    raise ValueError(f'{name}: label values {bad[:8]} other than air 0, soft tissue 1, '
                     'bone 2 (a multi-class segmentation must be merged into these three)')
  if hi < SOFT_TISSUE:
    raise ValueError(f'{name}: empty leg, no voxel of soft tissue (1) or bone (2)')
  return arr.astype(np.int8)


def labels_to_hu(labels: np.ndarray) -> np.ndarray:
  """The nominal HU volume (float32) of a checked label volume (LABEL_HU)."""
  table = np.array([LABEL_HU[AIR], LABEL_HU[SOFT_TISSUE], LABEL_HU[BONE]], np.float32)
  return table[np.asarray(labels, np.int64)]


def masks_from_label_volume(labels, spacing_mm: Sequence[float],
                            geometry: geometry_lib.ConeBeamGeometry, angles_deg=None, *,
                            name: str = 'labels') -> dict:
  """The views' masks of a label volume, as knee_drr makes them from a CT.

  The volume is placed as drr.scan_volume places a CT: the centre of the array (between
  voxels for even sizes) at the isocentre, axes (z, y, x) = (inferior -> superior,
  posterior -> anterior, right -> left) as ct_io.load_ct reads them; a file's origin is not
  used (move the leg to the array's centre to centre it in the field). Labels
  become LABEL_HU and drr.scan_volume makes the DRR and masks (same code, same conventions:
  contour 0.5 where DRR > 0.1, contour_bone adds 0.5 where bone projects inside the contour).

  Args:
    labels: (z, y, x) air 0, soft tissue 1, bone 2 (integers, or floats holding them).
    spacing_mm: (sz, sy, sx) voxel size.
    geometry: the scan (e.g. ConeBeamGeometry().with_detector(64)).
    angles_deg: view angles; None = geometry.angles_deg().
    name: what to call the volume in errors (the file name when read from one).

  Returns:
    dict of contour (V, H, W, 1) {0, 0.5}, contour_bone (V, H, W, 1) {0, 0.5, 1}, image
    (V, H, W, 1) the DRR in [0, 1] for reference, all float32, and angles_deg (V,).

  Raises:
    ValueError: not 3-D, values other than {0, 1, 2} (HU-like or a probability map said
      so), no leg, bad spacing, or a leg that reaches the detector's left or right border in
      some view (outside the field of view of the geometry).
  """
  labels = check_labels(labels, name)
  try:
    spacing = tuple(float(s) for s in spacing_mm)
  except (TypeError, ValueError):
    spacing = ()
  if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
    raise ValueError(f'{name}: spacing_mm must be 3 positive mm (z, y, x), got '
                     f'{spacing_mm!r}')
  fov_h, fov_w = geometry.field_of_view_mm
  field = (f'outside the field of view of the geometry ({fov_w:.0f} mm wide, '
           f'{fov_h:.0f} mm high at the isocentre; the volume\'s centre is placed there)')
  try:
    scan = drr.scan_volume(labels_to_hu(labels), spacing, geometry, angles_deg)
  except ValueError as e:
    if 'maximum' not in str(e):
      raise
    raise ValueError(f'{name}: the leg projects onto no detector pixel in any view: '
                     f'{field}') from None
  # Rays miss air exactly (mu = 0), so any positive value in an outer column is leg.
  left = scan.image[:, :, 0].max(axis=1) > 0
  right = scan.image[:, :, -1].max(axis=1) > 0
  cut = np.flatnonzero(left | right)
  if cut.size:
    v = int(cut[0])
    side = 'left and right borders' if left[v] and right[v] else (
        'left border' if left[v] else 'right border')
    raise ValueError(
        f'{name}: the leg reaches the detector\'s {side} in the view at '
        f'{float(scan.angles_deg[v]):g} deg (view {v}; {cut.size} of '
        f'{scan.angles_deg.size} views are cut): {field}')
  return dict(contour=scan.contour[..., None], contour_bone=scan.contour_bone[..., None],
              image=scan.image[..., None], angles_deg=np.asarray(scan.angles_deg))


def masks_from_label_file(path, geometry: geometry_lib.ConeBeamGeometry,
                          angles_deg=None) -> dict:
  """read_label_volume then masks_from_label_volume, errors naming the file."""
  labels, spacing = read_label_volume(path)
  return masks_from_label_volume(labels, spacing, geometry, angles_deg, name=os.fspath(path))


# ------------------------------------------------------------------------ consistency check


@dataclasses.dataclass(frozen=True)
class Agreement:
  """How well each view agrees with the visual hull of the others, (V,) float32 each."""
  iou: np.ndarray        # Intersection over union of the silhouette and the hull's projection.
  offset_px: np.ndarray  # |symmetric difference| / edge length: the mean edge offset.
  # The same, counting only pixels more than one pixel from the other mask: what decides.
  excess_px: np.ndarray
  pixels: int            # Detector size the check ran at (masks above CHECK_PX are pooled).


def view_agreement(masks, geometry: geometry_lib.ConeBeamGeometry, angles_deg=None, *,
                   n: int = GRID_N) -> Agreement:
  """Per view, its silhouette (mask > 0) against the re-projected visual hull of the other
  views' silhouettes (module docstring). masks: (V, H, W, 1) or (V, H, W).

  Detectors above CHECK_PX pixels are checked at CHECK_PX (or the nearest size that divides
  theirs): a pooled pixel is silhouette where at least half of it is, and the geometry is
  geometry.with_detector of that size (same field of view).
  """
  angles = geometry.angles_deg() if angles_deg is None else np.asarray(angles_deg, np.float64)
  sil = np.asarray(masks)
  sil = (sil[..., 0] if sil.ndim == 4 else sil) > 0
  rows, cols = geometry.detector_rows, geometry.detector_cols
  f = next((f for f in range(-(-rows // CHECK_PX), rows + 1) if rows % f == 0), 1)
  if rows == cols and f > 1:
    v = sil.shape[0]
    sil = sil.reshape(v, rows // f, f, cols // f, f).mean(axis=(2, 4)) >= 0.5
    geometry = geometry.with_detector(rows // f)
  out = np.asarray(_view_agreement(jnp.asarray(sil), geometry,
                                   tuple(float(a) for a in angles), int(n)))
  return Agreement(iou=out[:, 0], offset_px=out[:, 1], excess_px=out[:, 2],
                   pixels=geometry.detector_cols)


def check_consistent(masks, geometry: geometry_lib.ConeBeamGeometry, angles_deg=None, *,
                     what: str = 'masks', tolerance: float = TOLERANCE_PX,
                     n: int = GRID_N) -> Agreement:
  """Refuses a mask set whose views are not silhouettes of one body in this geometry.

  Args:
    masks: (V, H, W, 1) contour or contour_bone masks (a pixel is in the silhouette where
      the mask is > 0), view v taken at angles_deg[v].
    geometry, angles_deg: the scan (angles default geometry.angles_deg()).
    what: what to call the masks in errors.
    tolerance: the largest Agreement.excess_px a view may show, in pixels of the check
      (the detector's, or CHECK_PX's for larger detectors): its disagreement with the
      projection of the hull of the others beyond one pixel, per pixel of edge
      (TOLERANCE_PX; measured values there).
    n: hull grid size (multiview.volume_grid).

  Returns:
    The per-view Agreement, when every view is within the tolerance.

  Raises:
    ValueError: on a wrong shape (views != angles, size != detector), a set with no
      silhouette at all, or views that disagree: the message names the worst views by
      index and angle with their IoU and edge offset.
  """
  angles = geometry.angles_deg() if angles_deg is None else np.asarray(angles_deg, np.float64)
  masks = np.asarray(masks)
  multiview.check_views(masks, multiview.for_geometry(geometry, 2, angles), what)
  if not np.any(masks > 0):
    raise ValueError(f'{what}: no view holds any leg (every mask is 0)')
  a = view_agreement(masks, geometry, angles, n=n)
  bad = np.flatnonzero(a.excess_px > tolerance)
  if bad.size:
    worst = bad[np.argsort(-a.excess_px[bad], kind='stable')][:5]
    listed = ', '.join(f'view {v} at {angles[v]:g} deg (IoU {a.iou[v]:.3f}, off by '
                       f'{a.excess_px[v]:.2f} px beyond one)' for v in worst)
    raise ValueError(
        f'{what}: the masks are not views of one body in this geometry: {bad.size} of '
        f'{a.iou.size} views disagree with the visual hull of the others by more than '
        f'{tolerance:g} px beyond a pixel of slack (checked at {a.pixels} px); worst: '
        f'{listed}. Views shuffled, flipped, or from another leg?')
  return a


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _view_agreement(sil: jax.Array, geometry: geometry_lib.ConeBeamGeometry,
              angles: tuple[float, ...], n: int) -> jax.Array:
  """(V, 2) IoU and mean edge offset (px) of each silhouette (V, H, W) bool against the
  projection of the hull of the other views."""
  (nz, ny, nx), (sz, sy, sx) = multiview.volume_grid(geometry, n)
  rows, cols = geometry.detector_rows, geometry.detector_cols
  r_src, sdd, pitch = (geometry.source_to_isocentre_mm, geometry.source_to_detector_mm,
                       geometry.pixel_pitch_mm)
  z = jnp.asarray((np.arange(nz) - (nz - 1) / 2) * sz, jnp.float32)[:, None, None]
  y = jnp.asarray((np.arange(ny) - (ny - 1) / 2) * sy, jnp.float32)[:, None]
  x = jnp.asarray((np.arange(nx) - (nx - 1) / 2) * sx, jnp.float32)[None, :]
  theta = np.deg2rad(np.asarray(angles))
  trig = jnp.asarray(np.stack([np.sin(theta), np.cos(theta)], 1), jnp.float32)
  # Zero columns beyond the lateral edges: what projects off the detector's side is not leg.
  # Rows are clamped instead: the leg runs on above and below the detector.
  padded = jnp.pad(sil.astype(jnp.float32), ((0, 0), (0, 0), (1, 1)))

  def inside(args):
    """Voxels whose centre falls in this view's silhouette (bilinear value >= 0.5)."""
    image, (sin, cos) = args
    depth = r_src - x * sin + y * cos  # (ny, nx): distance from the source along the beam.
    col = jnp.clip(sdd * (x * cos + y * sin) / (depth * pitch) + (cols + 1) / 2, 0.0,
                   cols + 1.0)
    row = jnp.clip((rows - 1) / 2 - sdd * z / (depth * pitch), 0.0, rows - 1.0)
    c0 = jnp.minimum(jnp.floor(col), cols).astype(jnp.int32)
    r0 = jnp.minimum(jnp.floor(row), rows - 2).astype(jnp.int32) if rows > 1 else (
        jnp.zeros(row.shape, jnp.int32))
    wc, wr = col - c0, row - r0
    c0 = jnp.broadcast_to(c0, row.shape)
    wc = jnp.broadcast_to(wc, row.shape)
    r1 = jnp.minimum(r0 + 1, rows - 1)
    value = ((image[r0, c0] * (1 - wc) + image[r0, c0 + 1] * wc) * (1 - wr)
             + (image[r1, c0] * (1 - wc) + image[r1, c0 + 1] * wc) * wr)
    return value >= 0.5

  count = lax.fori_loop(0, len(angles), lambda v, acc: acc + inside(
      (padded[v], trig[v])).astype(jnp.int32), jnp.zeros((nz, ny, nx), jnp.int32))
  num_views = len(angles)
  # Horizontal sampling along each column's rays (a column's rays share their horizontal
  # path and differ in height only), half a voxel apart across the grid's disc.
  r_max = math.hypot(0.5 * nx * sx, 0.5 * ny * sy)
  step = 0.5 * min(sx, sy)
  depths = r_src - r_max + step * np.arange(int(math.ceil(2 * r_max / step)) + 1)
  t = jnp.asarray(depths / sdd, jnp.float32)[None, :]  # (1, S): ray parameter.
  v_mm, u_mm = geometry.detector_coords_mm()
  u = jnp.asarray(u_mm, jnp.float32)[:, None]  # (W, 1)
  v = jnp.asarray(v_mm, jnp.float32)

  def agreement(args):
    image, (sin, cos), own = args
    hull = ((count - own.astype(jnp.int32)) >= num_views - 1).astype(jnp.float32)
    vol = jnp.pad(jnp.transpose(hull, (1, 2, 0)), 1)  # (ny + 2, nx + 2, nz + 2), 0 outside.
    px = r_src * sin + t * (sdd * -sin + u * cos)  # (W, S)
    py = -r_src * cos + t * (sdd * cos + u * sin)
    fy = jnp.clip(py / sy + (ny - 1) / 2 + 1, 0.0, ny + 1.0)
    fx = jnp.clip(px / sx + (nx - 1) / 2 + 1, 0.0, nx + 1.0)
    iy = jnp.minimum(jnp.floor(fy), ny).astype(jnp.int32)
    ix = jnp.minimum(jnp.floor(fx), nx).astype(jnp.int32)
    wy, wx = (fy - iy)[..., None], (fx - ix)[..., None]
    lines = ((vol[iy, ix] * (1 - wx) + vol[iy, ix + 1] * wx) * (1 - wy)
             + (vol[iy + 1, ix] * (1 - wx) + vol[iy + 1, ix + 1] * wx) * wy)  # (W, S, nz+2)
    fz = jnp.clip(t[..., None] * v / sz + (nz - 1) / 2 + 1, 0.0, nz + 1.0)  # (1, S, H)
    fz = jnp.broadcast_to(fz, (cols,) + fz.shape[1:])
    iz = jnp.minimum(jnp.floor(fz), nz).astype(jnp.int32)
    lo = jnp.take_along_axis(lines, iz, axis=2)
    hi = jnp.take_along_axis(lines, iz + 1, axis=2)
    seen = jnp.max(lo + (hi - lo) * (fz - iz), axis=1).T >= 0.5  # (H, W)
    truth = image[:, 1:-1] > 0
    union = jnp.sum(seen | truth)
    iou = jnp.where(union > 0, jnp.sum(seen & truth) / jnp.maximum(union, 1), 1.0)
    edge = jnp.maximum(_edge_length(truth), 1)
    beyond = (seen & ~_dilate(truth)) | (truth & ~_dilate(seen))
    return jnp.stack([iou, jnp.sum(seen ^ truth) / edge, jnp.sum(beyond) / edge])

  def one(v_index):
    own = inside((padded[v_index], trig[v_index]))
    return agreement((padded[v_index], trig[v_index], own))

  return lax.map(one, jnp.arange(num_views)).astype(jnp.float32)


def _dilate(sil: jax.Array) -> jax.Array:
  """The silhouette grown by one pixel (3 x 3 neighbourhood)."""
  pad = jnp.pad(sil, 1)
  h, w = sil.shape
  return functools.reduce(jnp.logical_or, [pad[i:i + h, j:j + w] for i in range(3)
                                           for j in range(3)])


def _edge_length(sil: jax.Array) -> jax.Array:
  """Silhouette pixels with a 4-neighbour outside it, inside the image: the length of the
  edge in pixels (the image border is not an edge, the leg runs on beyond it)."""
  pad = jnp.pad(sil, 1, mode='edge')
  out = ~pad[:-2, 1:-1] | ~pad[2:, 1:-1] | ~pad[1:-1, :-2] | ~pad[1:-1, 2:]
  return jnp.sum(sil & out)
