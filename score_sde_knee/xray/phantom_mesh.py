"""Phantom revision 3: the bones are real human bone surfaces (bone_meshes.py).

Per patient (seed): overall size 0.85-1.15 with up to 3 % anisotropy, a smooth random
displacement of each bone (1.5 mm plane waves, wavelengths 80-160 mm), knee flexion 0-15
deg as the model's knee moves, alignment +-3 deg (varus narrows the medial joint space,
and thigh and shank share the angle as in revision 2), leg rotation about its axis +-5
deg, and joint spaces from radiographic norms (revision 2's gap_medial and lateral/medial
ratio, phantom.sample_params), measured below each femoral condyle's lowest point; the
patella keeps 3 mm of cartilage from the femur. Inside each bone, the depth below its
surface (a blurred Euclidean distance transform, in mm) lays out a cortex thin at the
epiphyses and thick along the shafts, trabecular bone with a texture fixed in
millimetres, and a fatty marrow canal in the shafts. HU, with sources (ranges as commonly
tabulated; e.g. the CT numbers of 71 human tissues in Schneider, Bortfeld and Schlegel,
Phys Med Biol 45:459-478, 2000, doi:10.1088/0031-9155/45/2/314, which this follows in
spirit, and the literature collected in docs/design.md):
  cortical bone 1500-1800 HU (dense cortex of adult long bones);
  trabecular bone 200-300 HU mean, with a +-130 HU texture (epiphyseal and metaphyseal
    cancellous bone of adults);
  yellow marrow -90 to -40 HU (fatty marrow of adult long-bone shafts);
  skin, fat and muscle as in revision 2 (phantom.sample_params).
"""
import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from score_sde_knee.xray import bone_meshes

_PATELLA_GAP_MM = 3.0


def sample_params(seed: int, base: dict) -> dict:
  """Revision 3's own draws, from a stream apart from revisions 1 and 2's."""
  rng = np.random.default_rng([int(seed), 3])
  u = lambda lo, hi: float(rng.uniform(lo, hi))
  p = dict(scale=u(0.85, 1.15), anisotropy=[u(0.97, 1.03) for _ in range(3)],
           flexion_deg=u(0.0, bone_meshes.MAX_FLEXION_DEG), varus_valgus_deg=u(-3.0, 3.0),
           axial_rotation_deg=u(-5.0, 5.0),
           cortex_shaft_mm=dict(femur=u(4.0, 6.0), tibia=u(4.0, 6.0), fibula=u(1.5, 2.5),
                                patella=1.0),
           cortex_epi_mm=u(0.8, 1.3), hu_cortex=u(1500, 1800), hu_trabecular=u(200, 300),
           hu_marrow=u(-90, -40), deform_seed=int(rng.integers(0, 2**31 - 1)))
  p['gap_mm'] = base['gap_medial'] / base['scale'] * p['scale']
  p['gap_ratio'] = base['gap_lateral'] / base['gap_medial']
  return p


def _height_map(tri: np.ndarray, lowest: bool) -> np.ndarray:
  """Lowest (or highest) vertex z per 1 mm xy cell of a +-200 mm square, nan if none."""
  v = tri.reshape(-1, 3)
  k = np.floor(v[:, :2] + 200).clip(0, 399).astype(np.int64)
  out = np.full(400 * 400, np.inf if lowest else -np.inf)
  (np.minimum if lowest else np.maximum).at(out, k[:, 0] * 400 + k[:, 1], v[:, 2])
  out[~np.isfinite(out)] = np.nan
  return out.reshape(400, 400)


def joint_gaps(femur: np.ndarray, tibia: np.ndarray) -> tuple[float, ...]:
  """(medial gap, lateral gap, their x positions): the joint space below each femoral
  condyle's lowest point (12-32 mm from the middle) down to the tibia, mm, as AP
  radiographs measure it."""
  low, high = _height_map(femur, True), _height_map(tibia, False)
  x = np.arange(400) - 199.5
  out = []
  for side in (x < 0, x > 0):
    cells = side & (np.abs(x) >= 12) & (np.abs(x) <= 32)
    plateau = high[cells]
    with np.errstate(invalid='ignore'):  # nan where no tibia
      # Only over the plateau: not where the tibia's side wall falls away under the condyle.
      on = plateau >= np.nanmax(plateau, initial=-np.inf) - 8.0
    f = np.where(on, low[cells], np.nan)
    if np.all(np.isnan(f)):
      raise ValueError('femur and tibia do not face each other: no joint space to measure')
    i = np.unravel_index(np.nanargmin(f), f.shape)
    out.append((float(f[i] - high[cells][i]), float(x[cells][i[0]])))
  (gm, xm), (gl, xl) = out
  return gm, gl, xm, xl


def place_bones(p: dict) -> dict[str, np.ndarray]:
  """The patient's four bones as triangles (F, 3, 3), leg frame mm (phantom.py's frame)."""
  bones = bone_meshes.posed_bones(p['flexion_deg'])
  rng = np.random.default_rng(p['deform_seed'])
  s = p['scale'] * np.array(p['anisotropy'])
  out = {}
  for name in bone_meshes.BONES:
    warp = bone_meshes.smooth_displacement(rng, 1.5)
    out[name] = warp(bones[name] * s)
  # Each compartment's joint space: the femur tilts in the coronal plane until the lateral
  # one exceeds the medial by the sampled ratio, and varus (+) narrows the medial side
  # further; then the shank moves along the limb to give the medial one its width.
  for _ in range(3):
    gm, gl, xm, xl = joint_gaps(out['femur'], out['tibia'])
    want = p['gap_mm'] * (p['gap_ratio'] - 1) + (xl - xm) * math.tan(
        math.radians(p['varus_valgus_deg']))
    # Clipped: the lowest points may jump between iterations on a flat condyle.
    angle = float(np.clip(((gl - gm) - want) / (xl - xm), -0.03, 0.03))
    tilt = bone_meshes.rotation((0, 1, 0), angle)
    for name in ('femur', 'patella'):
      out[name] = out[name] @ tilt.T
  gm, gl, _, _ = joint_gaps(out['femur'], out['tibia'])
  shift = min(gm - p['gap_mm'], gl - 2.0)  # Never under 2 mm laterally.
  for name in ('tibia', 'fibula'):
    out[name] = out[name] + np.array([0.0, 0.0, shift])
  # The patella rides on cartilage: at least _PATELLA_GAP_MM from the femur (the model's
  # knee leaves 4.5 mm at full extension, less when flexed and deformed).
  near = cKDTree(out['femur'].reshape(-1, 3)).query(
      out['patella'].reshape(-1, 3), distance_upper_bound=_PATELLA_GAP_MM)[0].min()
  near = min(float(near), _PATELLA_GAP_MM)  # inf: nothing closer than the bound
  out['patella'] = out['patella'] + np.array([0.0, max(0.0, _PATELLA_GAP_MM - near), 0.0])
  # The whole leg: flexion shared between thigh and shank (their bisector vertical, as in
  # revision 2), alignment split likewise, and the leg's rotation on the table.
  whole = (bone_meshes.rotation((0, 0, 1), math.radians(p['axial_rotation_deg']))
           @ bone_meshes.rotation((1, 0, 0), -math.radians(p['flexion_deg'] / 2))
           @ bone_meshes.rotation((0, 1, 0), -math.radians(p['varus_valgus_deg'] / 2)))
  return {k: v @ whole.T for k, v in out.items()}


def check_in_field(bones: dict, grid) -> None:
  """Refuses a bone whose knee end misses the field: the DRRs would cut the joint."""
  half = [grid.x[-1] + grid.h / 2, grid.y[-1] + grid.h / 2, grid.z[-1] + grid.h / 2]
  for name, tri in bones.items():
    v = tri.reshape(-1, 3)
    near = v[np.abs(v[:, 2]) < half[2]]
    if name == 'patella':
      near = v
    if near.size == 0 or np.any(np.abs(near) > half):
      raise ValueError(f'bone {name!r} lies (partly) outside the field of +-{half[0]:.0f}, '
                       f'+-{half[1]:.0f}, +-{half[2]:.0f} mm (x, y, z): use a larger field '
                       'or a smaller offset')


def _smoothstep(t):
  t = np.clip(t, 0.0, 1.0)
  return t * t * (3 - 2 * t)


def paint_bones(p: dict, g, hu: np.ndarray, bones: dict, fine, coarse) -> None:
  """Paints `bones` (place_bones, leg frame) into `hu` with partial-volume edges."""
  oz, oy, ox = p['offset_mm']
  bones = {k: v + np.array([ox, oy, oz]) for k, v in bones.items()}
  check_in_field(bones, g)
  s = p['scale']
  # Where each shaft begins, above (+) or below (-) the joint line (mm, scaled).
  shaft = dict(femur=(60 * s, 110 * s), tibia=(50 * s, 100 * s), fibula=(40 * s, 90 * s),
               patella=(1e9, 2e9))
  for name in ('fibula', 'tibia', 'femur', 'patella'):
    res = bone_meshes.occupancy(bones[name], g)
    if res is None:
      continue
    box, occ = res
    z, y, x = (c[b] for c, b in zip((g.z, g.y, g.x), box))
    inside = occ >= 0.5
    depth = ndimage.distance_transform_edt(inside) - 0.5
    depth = ndimage.gaussian_filter(depth.astype(np.float32), 1.0 / g.h) * g.h
    # Distance from the joint line along the limb: 0 at the epiphyses, large in the shafts.
    along = np.abs(z - oz)[:, None, None]
    a, b = shaft[name]
    w = _smoothstep((along - a) / (b - a))
    cortex = p['cortex_epi_mm'] + w * (p['cortex_shaft_mm'][name] - p['cortex_epi_mm'])
    # Trabeculae run mostly along the limb: the texture is stretched 3x along z, so it reads
    # as streaks along the bone. Ridged noise (1.6 - 2|n|, mean 0 and std ~1.2 for unit
    # Gaussian n) puts thin bright ridges on the noise's zero set, a network like trabeculae.
    trab = (p['hu_trabecular'] + 130 * (1.6 - 2 * np.abs(fine(z / 3, y, x)))
            + 30 * coarse(z, y, x))
    np.clip(trab, 50, 700, out=trab)
    inner = trab + w * (p['hu_marrow'] - trab)
    cort = p['hu_cortex'] + 30 * coarse(z, y, x)
    deep = np.clip(0.5 + (depth - cortex) / g.h, 0, 1)
    value = cort + deep * (inner - cort)
    sub = hu[box]
    sub += occ * (value - sub)
