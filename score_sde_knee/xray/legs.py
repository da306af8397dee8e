"""Scanner table and legs in a real CT: one case per leg, centred on the DRR orbit.

A lower-limb CT often holds both legs and the scanner table, while the DRR orbit turns
about the volume's centre whatever is in it (docs/geometry.md). `split_legs` takes a volume
from `ct_io.load_ct` (LAS: array axis 2 runs patient right -> left) and

1. finds the body: voxels above `body_hu` (soft tissue and fat; the table's foam mattress
   is below it);
2. removes the table: an opening along y (anterior-posterior) with a line of `plate_mm`
   removes every structure thinner than that along y, which a horizontal table or a curved
   couch is at every (z, x) and a leg is not; the legs are the large 3-D connected
   components of what is left, grown back into the body by a few mm to recover their
   thin rims. Whatever body lies outside the legs (the table, small pieces) turns to air;
3. tells the legs apart: two large components side by side are two legs (the one at
   smaller x is the right leg). A single component whose axial slices mostly hold two
   blobs is two legs touching (thighs, knees): it is cut at the median gap between them;
4. centres each leg: the volume is cropped around the leg's axial centroid over the middle
   half of z (the knee region: the orbit's plane is the volume's mid-height) plus a margin,
   padded with air where the crop leaves the volume, so the centroid lies within half a
   voxel of the orbit's axis. The shift is an integer number of voxels: HU are copied, not
   interpolated.

Each case's `notes` extend the CT's notes with what was done; a volume with no leg or with
more than two large components raises `ct_io.CTError` naming the file.
"""
import dataclasses

import numpy as np
from scipy import ndimage

from score_sde_knee.xray import ct_io

BODY_HU = -500.0     # Body mask threshold: fat (-100) is in, air and foam mattresses out.
PLATE_MM = 20.0      # Structures thinner than this along y are table, not leg.
MIN_LEG_ML = 50.0    # The smallest volume counted as a leg (a 10 cm calf is ~700 ml).
LARGE_FRACTION = 0.25  # Components under this fraction of the largest are debris.
RIM_MM = 3.0         # How far a leg grows back into the body to recover its thin rim.
PAD_MM = 10.0        # Air kept around each leg in its crop.
_TWO_BLOB_FRACTION = 0.5  # Slices with two blobs needed to split a single component.


@dataclasses.dataclass(frozen=True)
class Leg:
  """One case of a CT.

  Attributes:
    side: 'left' or 'right' (patient side) for a leg of a two-leg volume, 'single' for a
      volume that holds one leg.
    ct: the leg alone (other body voxels set to -1000 HU), cropped so that its axial
      centroid is at the centre of (y, x); `origin_mm` follows the crop along the LAS axes.
    shift_mm: (dx, dy) that moved the leg's centroid to the centre (x towards the patient's
      left, y towards anterior).
  """
  side: str
  ct: ct_io.CTVolume
  shift_mm: tuple[float, float]


def _line_opening(body: np.ndarray, length: int) -> np.ndarray:
  """Keeps the voxels of runs along y (axis 1) at least `length` voxels long."""
  line = np.ones((1, length, 1), bool)
  return ndimage.binary_opening(body, structure=line)


def _touching_split(comp: np.ndarray) -> int | None:
  """x index at which a component of two touching legs is cut, or None for one leg."""
  per_slice = np.zeros((3, 3, 3), bool)
  per_slice[1] = ndimage.generate_binary_structure(2, 1)
  labels, _ = ndimage.label(comp, structure=per_slice)
  objs = ndimage.find_objects(labels)
  sizes = np.bincount(labels.ravel())
  blobs = {}  # z -> [(size, x_start, x_stop)]
  for lab, sl in enumerate(objs, start=1):
    if sl is not None:
      blobs.setdefault(sl[0].start, []).append((sizes[lab], sl[2].start, sl[2].stop))
  cuts = []
  for found in blobs.values():
    found.sort(reverse=True)
    total = sum(b[0] for b in found)
    if len(found) >= 2 and found[1][0] >= 0.2 * total:
      a, b = sorted(found[:2], key=lambda f: f[1])
      if a[2] <= b[1]:  # side by side along x
        cuts.append((a[2] + b[1]) / 2)
  if len(cuts) < _TWO_BLOB_FRACTION * len(blobs):
    return None
  return int(round(float(np.median(cuts))))


def _centre(ct: ct_io.CTVolume, hu: np.ndarray, leg: np.ndarray, pad: int):
  """Crops hu around the leg's axial centroid (knee region); returns hu, shift, origin."""
  nz, ny, nx = hu.shape
  _, hy, hx = ct.spacing_mm
  mid = leg[nz // 4: nz - nz // 4]
  z, y, x = np.nonzero(mid if mid.any() else leg)
  cy, cx = int(round(float(y.mean()))), int(round(float(x.mean())))
  _, ys, xs = np.nonzero(leg)
  ry = max(cy - ys.min(), ys.max() - cy) + pad
  rx = max(cx - xs.min(), xs.max() - cx) + pad
  out = np.full((nz, 2 * ry + 1, 2 * rx + 1), -1000.0, np.float32)
  y0, x0 = cy - ry, cx - rx  # input index of the output's [.., 0, 0]
  sy = slice(max(y0, 0), min(cy + ry + 1, ny))
  sx = slice(max(x0, 0), min(cx + rx + 1, nx))
  out[:, sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0] = hu[:, sy, sx]
  shift = (((nx - 1) / 2 - cx) * hx, ((ny - 1) / 2 - cy) * hy)
  ox, oy, oz = ct.origin_mm
  return out, shift, (ox + x0 * hx, oy - y0 * hy, oz)


def split_legs(ct: ct_io.CTVolume, *, body_hu: float = BODY_HU, plate_mm: float = PLATE_MM,
               min_leg_ml: float = MIN_LEG_ML, pad_mm: float = PAD_MM) -> list[Leg]:
  """One centred case per leg, the table and other pieces removed (see module doc).

  Returns:
    [Leg('single')] for one leg, [Leg('right'), Leg('left')] for two.

  Raises:
    ct_io.CTError: no body component of at least `min_leg_ml` thicker than `plate_mm`
      along y (no leg), or more than two large components.
  """
  hu = ct.hu
  hz, hy, hx = ct.spacing_mm
  voxel_ml = hz * hy * hx / 1000.0
  body = hu > body_hu
  thick = _line_opening(body, int(plate_mm / hy) + 1)
  labels, n = ndimage.label(thick)
  sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0, int)
  largest = int(sizes.max()) if n else 0
  if largest * voxel_ml < min_leg_ml:
    raise ct_io.CTError(
        f'{ct.source}: no leg found: no body (HU > {body_hu:g}) thicker than {plate_mm:g} '
        f'mm along y with at least {min_leg_ml:g} ml (largest {largest * voxel_ml:.3g} ml)')
  large = [i + 1 for i in np.flatnonzero(sizes >= LARGE_FRACTION * largest)]
  if len(large) > 2:
    ml = ', '.join(f'{sizes[i - 1] * voxel_ml:.3g}' for i in large)
    raise ct_io.CTError(f'{ct.source}: {len(large)} large body components ({ml} ml); '
                        'expected one leg or two legs side by side')
  notes = []
  parts = [labels == i for i in large]
  if len(parts) == 1:
    cut = _touching_split(parts[0])
    if cut is not None:
      left = np.zeros_like(parts[0])
      left[..., cut:] = parts[0][..., cut:]
      parts = [parts[0] & ~left, left]
      notes.append(f'two legs touching: cut at x index {cut} '
                   f'({(cut - (hu.shape[2] - 1) / 2) * hx:+.1f} mm from the centre)')
  rim = max(1, int(np.ceil(RIM_MM / min(ct.spacing_mm))))
  legs = [ndimage.binary_dilation(p, iterations=rim, mask=body) for p in parts]
  all_legs = np.logical_or.reduce(legs)
  removed = body & ~all_legs
  table = int((removed & ~thick).sum())
  other = int(removed.sum()) - table
  if table:
    notes.append(f'table removed: {table} voxels (body thinner than {plate_mm:g} mm along y, '
                 'apart from the legs)')
  if other:
    notes.append(f'removed {other} body voxels of pieces apart from the legs')
  legs.sort(key=lambda m: float(np.nonzero(m)[2].mean()))  # LAS: right leg at smaller x
  sides = ['single'] if len(legs) == 1 else ['right', 'left']
  pad = int(np.ceil(pad_mm / min(hy, hx)))
  out = []
  for side, leg in zip(sides, legs):
    others = body & ~leg  # other leg, table and debris become air; rims stay with the leg
    alone = np.where(others, np.float32(-1000.0), hu)
    cropped, shift, origin = _centre(ct, alone, leg, pad)
    what = ('one leg' if side == 'single' else f'{side} leg of a two-leg volume')
    leg_notes = notes + [
        what, f'centred: shifted by (dx, dy) = ({shift[0]:+.1f}, {shift[1]:+.1f}) mm; '
        f'cropped to (y, x) = {cropped.shape[1:]} voxels']
    out.append(Leg(side=side, shift_mm=shift, ct=dataclasses.replace(
        ct, hu=cropped, origin_mm=origin, notes=list(ct.notes) + leg_notes)))
  return out
