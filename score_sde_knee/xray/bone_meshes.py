"""Real bone surfaces for the knee phantom: loading, smoothing, the model's knee, voxelising.

The femur, tibia, fibula and patella of an adult right leg (Rajagopal et al., IEEE TBME
2016; meshes/NOTICE.md) in the OpenSim body frames (metres; x anterior, y superior, z
lateral). They are low-poly (140 to 908 triangles), so each is rebuilt as a smooth surface:
voxelised at 1 mm, blurred (sigma 2.5 mm, which rounds the facets away), contoured by
marching cubes and Taubin-smoothed; far shaft ends are capped outside any field. The knee
follows the model's coupled kinematics (the tibia's translations and rotations and the
patella's pose as polynomials of the knee angle, myo_sim's myolegs_assets.xml).

Voxelising (`occupancy`) integrates each mesh exactly along z columns: a column's crossings
with the triangles, signed by the triangle's orientation, give the inside length of every
voxel it passes, and columns are supersampled about every 0.5 mm in x and y. This is the
partial-volume occupancy of the solid, needs only numpy, and tolerates a stray crossing
(the result is clipped to [0, 1]).
"""
import functools
import math
import os

import numpy as np
from scipy import ndimage

BONES = ('femur', 'tibia', 'fibula', 'patella')
MESH_DIR = os.path.join(os.path.dirname(__file__), 'meshes')
MAX_FLEXION_DEG = 15.0
_CROP_MM = 175.0  # Shafts are cut this far from the knee, beyond any field's edge.
_REMESH_MM = 1.0
_BLUR_MM = 2.5

# myolegs_chain.xml / myolegs_assets.xml (right leg): body position in the femur frame (m),
# then the body's joints in order, each (kind, axis, polynomial of the knee angle in rad or
# None for the knee angle itself); MuJoCo applies them in this order in the moving frame.
_TIBIA = ((-4.6e-07, -0.404425, -0.00126526), (
    ('slide', (0.992246, 0.123982, -0.00878916),
     (7.69254e-11, 0.00587971, -0.00125622, -2.61846e-06, 6.24355e-07)),
    ('slide', (-0.124293, 0.989762, -0.0701648),
     (9.53733e-08, 0.00312879, -0.00230804, 0.000561561, 5.68366e-07)),
    ('hinge', (-3.98373e-10, -0.0707131, -0.997497), None),
    ('hinge', (0.992246, 0.123982, -0.00878916),
     (-1.47325e-08, 0.0791, -0.0328478, -0.0252183, 0.0108321)),
    ('hinge', (-0.124293, 0.989762, -0.0701648),
     (1.08939e-08, 0.369499, -0.169478, 0.0251643, 3.50498e-07))))
_PATELLA = ((-0.00809, -0.40796, 0.0), (
    ('slide', (0, 1, 0), (-0.0108281, -0.0487847, 0.00927644, 0.0131673, -0.00349673)),
    ('slide', (1, 0, 0), (0.0524192, -0.0150188, -0.0340522, 0.0133393, -0.000879151)),
    ('hinge', (0, 0, 1), (0.010506, 0.0247615, -1.31647, 0.716337, -0.138302))))
_BODY = dict(femur=None, tibia=_TIBIA, fibula=_TIBIA, patella=_PATELLA)
# OpenSim (x anterior, y superior, z lateral) -> phantom (x lateral, y anterior, z up).
_TO_PHANTOM = np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]])


def rotation(axis, angle_rad: float) -> np.ndarray:
  """Rodrigues: the rotation by angle_rad about `axis` (right-handed)."""
  a = np.asarray(axis, np.float64)
  a = a / np.linalg.norm(a)
  k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
  return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * k @ k


def body_pose(name: str, knee_rad: float) -> tuple[np.ndarray, np.ndarray]:
  """(R, t) of bone `name`'s body in the femur frame (metres): femur = t + R @ local."""
  if _BODY[name] is None:
    return np.eye(3), np.zeros(3)
  pos, joints = _BODY[name]
  r, t = np.eye(3), np.array(pos, np.float64)
  for kind, axis, coef in joints:
    q = knee_rad if coef is None else float(np.polynomial.polynomial.polyval(knee_rad, coef))
    a = r @ (np.asarray(axis, np.float64) / np.linalg.norm(axis))
    if kind == 'slide':
      t = t + q * a
    else:
      r = rotation(a, q) @ r
  return r, t


def check_watertight(mesh, name: str) -> None:
  """Refuses a surface that does not enclose a volume: its inside would be undefined."""
  if not (mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0):
    raise ValueError(
        f'bone mesh {name!r} is not a closed, consistently oriented surface (watertight '
        f'{mesh.is_watertight}, winding consistent {mesh.is_winding_consistent}, volume '
        f'{mesh.volume:.3g}): it cannot be voxelised')


def load_bone(name: str, mesh_dir: str = MESH_DIR):
  """The raw STL of bone `name` (metres, body frame), duplicate faces dropped, small holes
  filled; refused (ValueError naming it) if that leaves it open."""
  import trimesh  # pylint: disable=g-import-not-at-top
  if name not in BONES:
    raise ValueError(f'unknown bone {name!r}: expected one of {BONES}')
  mesh = trimesh.load(os.path.join(mesh_dir, f'r_{name}.stl'), force='mesh')
  mesh.update_faces(mesh.unique_faces())
  mesh.remove_unreferenced_vertices()
  trimesh.repair.fill_holes(mesh)
  return mesh


@functools.lru_cache(maxsize=None)
def _knee_origin_m() -> np.ndarray:
  """The top of the tibial plateau's centre in the femur frame at full extension (metres):
  the phantom's origin. The central eminence is left out of the plateau's height."""
  r, t = body_pose('tibia', 0.0)
  v = load_bone('tibia').vertices @ r.T + t
  top = v[v[:, 1] > v[:, 1].max() - 0.02]
  centre = (top.min(axis=0) + top.max(axis=0)) / 2
  plateau = top[np.abs(top[:, 2] - centre[2]) > 0.012]
  return np.array([centre[0], plateau[:, 1].max(), centre[2]])


@functools.lru_cache(maxsize=None)
def smooth_bone(name: str) -> tuple[np.ndarray, np.ndarray]:
  """(vertices (V, 3) mm in the body frame, faces (F, 3)) of bone `name` rebuilt smooth."""
  import trimesh  # pylint: disable=g-import-not-at-top
  from skimage import measure  # pylint: disable=g-import-not-at-top
  raw = load_bone(name)
  if name != 'tibia':  # The tibia's own surface has non-manifold edges; it is rebuilt.
    check_watertight(raw, name)
  verts = np.asarray(raw.vertices, np.float64) * 1000.0
  # Only the part within _CROP_MM of the knee matters; the body's superior axis is y.
  r, t = body_pose(name, 0.0)
  knee_y = ((_knee_origin_m() - t) @ r)[1] * 1000.0
  lo, hi = verts.min(axis=0) - 3 * _REMESH_MM, verts.max(axis=0) + 3 * _REMESH_MM
  lo[1], hi[1] = max(lo[1], knee_y - _CROP_MM), min(hi[1], knee_y + _CROP_MM)
  h = _REMESH_MM
  # Voxelised with the long axis (y) along the integration columns: coordinates are
  # passed as (z, x, y), so the occupancy comes back indexed (y, x, z).
  tri = verts[raw.faces][:, :, [2, 0, 1]]
  ay, ax, az = (np.arange(lo[k], hi[k], h) + h / 2 for k in (1, 0, 2))
  occ = occupancy_on_axes(tri, ay, ax, az, h, sub=1)
  occ = np.pad(ndimage.gaussian_filter(occ, _BLUR_MM / h), 1)  # Padding caps the cut ends.
  v, f, _, _ = measure.marching_cubes(occ, 0.5, spacing=(h, h, h))
  v = v + np.array([ay[0], ax[0], az[0]]) - h
  mesh = trimesh.Trimesh(v[:, [1, 0, 2]], f, process=True)  # back to (x, y, z)
  trimesh.smoothing.filter_taubin(mesh, iterations=10)
  if mesh.volume < 0:
    mesh.invert()
  check_watertight(mesh, name)
  return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def posed_bones(knee_deg: float) -> dict[str, np.ndarray]:
  """Bone name -> triangles (F, 3, 3) in mm in the phantom frame (x lateral, y anterior,
  z up, origin at the plateau's top centre) with the knee flexed by knee_deg as the
  model's knee moves (tibia, fibula and patella follow the femur's condyles)."""
  if not 0.0 <= knee_deg <= MAX_FLEXION_DEG:
    raise ValueError(f'knee flexion must be in [0, {MAX_FLEXION_DEG}] degrees, got '
                     f'{knee_deg!r}')
  origin = _knee_origin_m() * 1000.0  # A new array: the cached one stays untouched.
  out = {}
  for name in BONES:
    v, f = smooth_bone(name)
    r, t = body_pose(name, math.radians(knee_deg))
    w = v @ r.T + t * 1000.0 - origin
    out[name] = (w @ _TO_PHANTOM.T)[f]
  return out


def smooth_displacement(rng, amplitude_mm: float, wavelength_mm=(80.0, 160.0), modes=4):
  """A random smooth displacement field x -> x + d(x): a few plane waves. Its gradient is
  at most modes * 2 pi amplitude / wavelength (0.31 by default), so surfaces never fold."""
  k = rng.standard_normal((modes, 3))
  k *= (2 * np.pi / rng.uniform(*wavelength_mm, modes))[:, None] / np.linalg.norm(
      k, axis=1, keepdims=True)
  a = rng.standard_normal((modes, 3))
  a *= amplitude_mm / np.linalg.norm(a, axis=1, keepdims=True)
  phase = rng.uniform(0, 2 * np.pi, modes)
  return lambda x: x + np.sin(x @ k.T + phase) @ a


def occupancy_on_axes(tri, z, y, x, h: float, sub: int) -> np.ndarray:
  """Partial-volume occupancy (len(z), len(y), len(x)) of the closed surface `tri`
  (F, 3, 3), vertices (x, y, z), on voxels centred at z, y, x (ascending, step h); columns
  run along z, sub x sub of them per voxel."""
  tri = np.asarray(tri, np.float64)
  # A fixed irrational nudge keeps columns off vertices and edges (ties count once).
  off = (np.arange(sub) + 0.5) / sub * h - h / 2
  xs = (x[:, None] + off[None, :]).ravel() + 1.2345e-6
  ys = (y[:, None] + off[None, :]).ravel() + 2.3456e-6
  px, py, pz = tri[..., 0], tri[..., 1], tri[..., 2]
  dx, dy = xs[1] - xs[0] if xs.size > 1 else h, ys[1] - ys[0] if ys.size > 1 else h
  i0 = np.ceil((px.min(1) - xs[0]) / dx).clip(0, xs.size).astype(np.int64)
  i1 = np.floor((px.max(1) - xs[0]) / dx).clip(-1, xs.size - 1).astype(np.int64)
  j0 = np.ceil((py.min(1) - ys[0]) / dy).clip(0, ys.size).astype(np.int64)
  j1 = np.floor((py.max(1) - ys[0]) / dy).clip(-1, ys.size - 1).astype(np.int64)
  ni, nj = np.maximum(i1 - i0 + 1, 0), np.maximum(j1 - j0 + 1, 0)
  count = ni * nj
  t = np.repeat(np.arange(len(tri)), count)
  k = np.arange(t.size) - np.repeat(np.cumsum(count) - count, count)
  ci = i0[t] + k % ni[t]
  cj = j0[t] + k // ni[t]
  qx, qy = xs[ci], ys[cj]
  ax, ay, bx, by, cx, cy = px[t, 0], py[t, 0], px[t, 1], py[t, 1], px[t, 2], py[t, 2]
  w0 = (bx - qx) * (cy - qy) - (by - qy) * (cx - qx)
  w1 = (cx - qx) * (ay - qy) - (cy - qy) * (ax - qx)
  w2 = (ax - qx) * (by - qy) - (ay - qy) * (bx - qx)
  area = w0 + w1 + w2
  inside = np.where(area > 0, (w0 >= 0) & (w1 >= 0) & (w2 >= 0),
                    (w0 <= 0) & (w1 <= 0) & (w2 <= 0)) & (area != 0)
  t, ci, cj = t[inside], ci[inside], cj[inside]
  w0, w1, w2, area = w0[inside], w1[inside], w2[inside], area[inside]
  zc = (w0 * pz[t, 0] + w1 * pz[t, 1] + w2 * pz[t, 2]) / area
  # Seen from +z, a counter-clockwise triangle faces up: the column leaves the solid there.
  sign = np.where(area > 0, -1.0, 1.0)
  pos = (zc - (z[0] - h / 2)) / h
  kz = np.floor(pos)
  frac = pos - kz
  below = kz < 0
  kz, frac = np.where(below, 0, kz), np.where(below, 0.0, frac)
  keep = kz < z.size
  col = (cj * xs.size + ci)[keep]
  kz, frac, sign = kz[keep].astype(np.int64), frac[keep], sign[keep]
  n = z.size + 1
  flat = col * n + kz
  d = np.bincount(flat, sign * (1 - frac), minlength=xs.size * ys.size * n)
  d += np.bincount(flat + 1, sign * frac, minlength=xs.size * ys.size * n)
  occ = np.cumsum(d.reshape(ys.size, xs.size, n), axis=2)[:, :, :-1]
  occ = occ.reshape(y.size, sub, x.size, sub, z.size).mean(axis=(1, 3))
  return np.clip(occ.transpose(2, 0, 1), 0.0, 1.0).astype(np.float32)


def occupancy(tri, grid, pad: int = 2):
  """(box slices (z, y, x), occupancy over the box) of the closed surface `tri` (F, 3, 3),
  vertices (x, y, z) in world mm, on a shapes.Grid, or None if it misses the grid.
  Columns are supersampled to about 0.5 mm."""
  lo, hi = tri.reshape(-1, 3).min(axis=0), tri.reshape(-1, 3).max(axis=0)
  box = []
  for c, a, b in zip((grid.z, grid.y, grid.x), lo[::-1], hi[::-1]):
    i0 = max(int(np.searchsorted(c, a)) - pad, 0)
    i1 = min(int(np.searchsorted(c, b)) + pad, c.size)
    if i1 <= i0:
      return None
    box.append(slice(i0, i1))
  sub = max(1, int(math.ceil(grid.h / 0.5 - 1e-9)))
  occ = occupancy_on_axes(tri, grid.z[box[0]].astype(np.float64),
                          grid.y[box[1]].astype(np.float64),
                          grid.x[box[2]].astype(np.float64), grid.h, sub)
  return tuple(box), occ
