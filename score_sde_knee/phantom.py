"""Procedural knee CT phantom: one patient per seed (DESIGN 2.4).

Frame (mm): z along the limb, 0 at the top of the tibial plateau, +z toward the hip; x
medio-lateral (+x lateral); y antero-posterior (+y anterior). Arrays are (z, y, x) like
SimpleITK's GetArrayFromImage; voxel i along an axis of n voxels of size h sits at
(i + 0.5) h - n h / 2 in the world, so the grid is centred on 0 and a 2 mm grid's voxels are
exactly 2x2x2 blocks of the 1 mm grid's. The leg frame is the world shifted by
`params['offset_mm']`.

Anatomy is a union of analytic primitives (ellipsoids, elliptic frustums, half-space clips)
painted in order, each blended by a partial-volume occupancy: clip(0.5 - d / h, 0, 1) with d
a first-order signed distance F / |grad F|. Bones are rigid: the tibia (with fibula) turns
by -flexion/2 about the ML axis through the plateau centre, the femur (with patella) by
+flexion/2 about the ML axis through the condyles' centre (`params['femur_pivot']`), and
likewise by +/- varus/2 about the AP axis (+varus_valgus_deg = varus: hip and ankle medial
of the knee). The condyles are placed in the tibia's frame, so the sampled joint gaps hold
whatever the alignment. Soft tissue bends smoothly between the two. The fibular head sits at
(+40, -13, -29) mm (lateral, posterior, below the plateau; DESIGN 2.4's +13 is posterior in
its LPS-like frame). Texture is smooth lattice noise fixed in world millimetres, so it does not
depend on the voxel size.
"""
import argparse
import dataclasses
import json
import math

import numpy as np
from scipy import ndimage


DEFAULT_SHAPE_MM = (240.0, 232.0, 232.0)  # (z, y, x) field; the leg and skin fit inside.
_SHELL_MM = 1.5      # Cortical shell of epiphyses, plateau and patella.
_FAR = 400.0         # Stand-in for "beyond the field" along shafts.
_NOISE_SOFT_MM = 12.0
_NOISE_BONE_MM = 2.5


@dataclasses.dataclass(frozen=True)
class Phantom:
  """A phantom patient.

  Attributes:
    hu: float32 (z, y, x) Hounsfield units, air = -1000.
    spacing_mm: voxel size (sz, sy, sx) in mm.
    params: JSON-serialisable sampled parameters; lengths in mm already multiplied by
      `scale`, angles in degrees, HU values in HU, `offset_mm` in (z, y, x) order.
  """
  hu: np.ndarray
  spacing_mm: tuple[float, float, float]
  params: dict


def _rot(flex_deg: float, varus_deg: float) -> np.ndarray:
  """R_y(varus) @ R_x(flex) acting on (x, y, z) vectors; +flex tilts +z toward -y."""
  a, b = math.radians(flex_deg), math.radians(varus_deg)
  rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
  ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
  return ry @ rx


def sample_params(seed: int) -> dict:
  """Draws one patient (DESIGN 2.4 table; `(male, female)` ranges, uniform unless noted)."""
  rng = np.random.default_rng(seed)
  male = bool(rng.random() < 0.5)

  def u(lo, hi):
    return float(rng.uniform(lo, hi))

  def mf(m_range, f_range):
    return u(*(m_range if male else f_range))

  # Truncated at 2 sigma so the leg always fits the default field.
  s = float(np.clip(rng.normal(1.0, 0.05), 0.9, 1.1))
  p = dict(seed=int(seed), sex='male' if male else 'female', scale=s,
           flexion_deg=u(0.0, 10.0), varus_valgus_deg=u(-5.0, 5.0),
           offset_mm=[float(v) for v in rng.uniform(-10.0, 10.0, 3)])
  sizes = dict(
      thigh_a=u(65, 90), thigh_b=u(60, 80), knee_a=u(55, 70), knee_b=u(50, 65),
      calf_a=mf((52, 62), (50, 60)), skin=u(1.5, 2.5), fat=mf((3, 12), (8, 30)),
      femur_d=mf((26, 30), (25, 28)), femur_canal_d=u(10, 14),
      condyle_ml=mf((33, 39), (29, 34)), condyle_ap=mf((58, 68), (51, 60)),
      notch=u(15, 23),
      gap_medial=float(np.clip(rng.normal(5.7, 0.8) if male else rng.normal(4.8, 0.7), 3, 9)),
      plateau_ml=mf((75, 83), (66, 72)), plateau_ap=mf((47, 54), (42, 47)),
      tibia_ml=u(24, 30), tibia_ap=u(20, 26), tibia_cortex=u(4, 7),
      fibula_head_d=u(20, 28), fibula_d=u(10, 15),
      patella_h=mf((36, 42), (33, 37)), patella_w=mf((43, 48), (39, 43)),
      patella_t=mf((21, 24), (19, 22)))
  sizes['calf_b'] = sizes['calf_a'] * u(0.88, 1.0)
  sizes['gap_lateral'] = sizes['gap_medial'] * u(1.0, 1.25)
  p.update({k: v * s for k, v in sizes.items()})
  p['plateau_slope_deg'] = u(5.0, 10.0)
  p['shell'] = _SHELL_MM
  # HU: a per-patient base, kept inside the table's range once texture is added.
  p.update(hu_skin=u(25, 55), hu_fat=u(-98, -82), hu_muscle=u(45, 55), hu_joint=u(65, 95),
           hu_femur_cortex=u(1380, 1720), hu_tibia_cortex=u(1380, 1720),
           hu_fibula_cortex=u(1280, 1620), hu_marrow=u(-85, -45), hu_shell=u(850, 1150),
           hu_trabecular=u(240, 320), hu_patella_inside=u(260, 330))
  p['noise_seed'] = int(rng.integers(0, 2**31 - 1))
  return p


@dataclasses.dataclass(frozen=True)
class _Grid:
  h: float
  z: np.ndarray  # Voxel-centre world coordinates (mm), float32, one array per axis.
  y: np.ndarray
  x: np.ndarray


def _make_grid(shape_mm, h: float) -> _Grid:
  axes = []
  for ext in shape_mm:
    n = max(1, int(round(ext / h)))
    axes.append(((np.arange(n) + 0.5) * h - n * h / 2).astype(np.float32))
  return _Grid(float(h), *axes)


class _Noise:
  """Smooth unit-variance noise on a fixed world lattice, sampled by trilinear interpolation."""

  def __init__(self, rng, shape_mm, g: float):
    self.g = g
    self.n = [int(math.ceil(ext / g)) + 3 for ext in shape_mm]
    self.origin = [-(n - 1) * g / 2 for n in self.n]
    lat = ndimage.gaussian_filter(rng.standard_normal(self.n), 0.8, mode='wrap')
    self.lat = (lat / lat.std()).astype(np.float32)

  def _axis(self, c, k):
    pos = np.clip((c - self.origin[k]) / self.g, 0, self.n[k] - 1.001)
    i = np.floor(pos).astype(np.intp)
    return i, (pos - i).astype(np.float32)

  def __call__(self, z, y, x) -> np.ndarray:
    (iz, wz), (iy, wy), (ix, wx) = self._axis(z, 0), self._axis(y, 1), self._axis(x, 2)
    lat = self.lat[iz.min():iz.max() + 2, iy.min():iy.max() + 2]
    iz, iy = iz - iz.min(), iy - iy.min()
    t = lat[:, :, ix] * (1 - wx) + lat[:, :, ix + 1] * wx
    t = t[:, iy] * (1 - wy)[:, None] + t[:, iy + 1] * wy[:, None]
    return t[iz] * (1 - wz)[:, None, None] + t[iz + 1] * wz[:, None, None]


@dataclasses.dataclass(frozen=True)
class _Prim:
  """An ellipsoid (z0 is None) or an elliptic frustum along local z, in a rigid frame.

  Ellipsoid: centre (x, y, z), semi-axes (a, b, c). Frustum: local z in [z0, z1] with the
  centre (x, y) and semi-axes (a, b) linear in z from `c0, s0` at z0 to `c1, s1` at z1.
  `clips` are half-spaces n . p <= d (unit n, local frame). Shrinking by t gives the inner
  surface of a shell of thickness t.
  """
  frame: tuple  # (R, t): world = t + R @ local, vectors (x, y, z).
  centre: tuple = (0.0, 0.0, 0.0)
  semi: tuple = (1.0, 1.0, 1.0)
  z0: float | None = None
  z1: float = 0.0
  c1: tuple = (0.0, 0.0)
  s1: tuple = (1.0, 1.0)
  clips: tuple = ()

  def corners(self, t: float) -> np.ndarray:
    if self.z0 is None:
      lo = np.subtract(self.centre, self.semi)
      hi = np.add(self.centre, self.semi)
    else:
      a = max(self.semi[0], self.s1[0]); b = max(self.semi[1], self.s1[1])
      xs = [self.centre[0] - a, self.centre[0] + a, self.c1[0] - a, self.c1[0] + a]
      ys = [self.centre[1] - b, self.centre[1] + b, self.c1[1] - b, self.c1[1] + b]
      lo = np.array([min(xs), min(ys), self.z0]); hi = np.array([max(xs), max(ys), self.z1])
    lo, hi = lo - t, hi + t
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                     for z in (lo[2], hi[2])])

  def occupancy(self, g: _Grid, shrink: float = 0.0):
    """Returns (box slices (z, y, x), occupancy in [0, 1] over the box) or None."""
    r, t = self.frame
    w = self.corners(g.h) @ r.T + t
    box = []
    for k, c in zip((2, 1, 0), (g.z, g.y, g.x)):
      i0 = int(np.searchsorted(c, w[:, k].min())); i1 = int(np.searchsorted(c, w[:, k].max()))
      if i1 <= i0:
        return None
      box.append(slice(i0, i1))
    dz, dy, dx = (c[s] - float(t[k]) for c, s, k in zip((g.z, g.y, g.x), box, (2, 1, 0)))
    dz, dy, dx = dz[:, None, None], dy[None, :, None], dx[None, None, :]
    rf = r.tolist()  # Python floats keep the arithmetic in float32.
    lx, ly, lz = (rf[0][k] * dx + rf[1][k] * dy + rf[2][k] * dz for k in range(3))
    if self.z0 is None:
      a, b, c = (s - shrink for s in self.semi)
      ux, uy, uz = lx - self.centre[0], ly - self.centre[1], lz - self.centre[2]
      f = (ux / a) ** 2 + (uy / b) ** 2 + (uz / c) ** 2 - 1
      grad = (ux / a**2) ** 2 + (uy / b**2) ** 2 + (uz / c**2) ** 2
      occ = np.clip(0.5 - f / (2 * g.h * np.sqrt(grad) + 1e-6), 0, 1)
    else:
      frac = (lz - self.z0) / (self.z1 - self.z0)
      cx = self.centre[0] + frac * (self.c1[0] - self.centre[0])
      cy = self.centre[1] + frac * (self.c1[1] - self.centre[1])
      a = self.semi[0] + frac * (self.s1[0] - self.semi[0]) - shrink
      b = self.semi[1] + frac * (self.s1[1] - self.semi[1]) - shrink
      ux, uy = lx - cx, ly - cy
      f = (ux / a) ** 2 + (uy / b) ** 2 - 1
      grad = (ux / a**2) ** 2 + (uy / b**2) ** 2
      occ = np.clip(0.5 - f / (2 * g.h * np.sqrt(grad) + 1e-6), 0, 1)
      # The ends are not shrunk: every frustum end joins another part or leaves the field.
      occ *= np.clip(0.5 + (lz - self.z0) / g.h, 0, 1)
      occ *= np.clip(0.5 + (self.z1 - lz) / g.h, 0, 1)
    for n, d in self.clips:
      occ *= np.clip(0.5 - (n[0] * lx + n[1] * ly + n[2] * lz - d + shrink) / g.h, 0, 1)
    return tuple(box), occ.astype(np.float32)


def _paint(hu, g, prim, value, noise=None, amp=0.0, lo=-1000.0, hi=3000.0, shrink=0.0):
  """Blends `value` (+ amp * noise, clipped to [lo, hi]) into `hu` where `prim` is."""
  res = prim.occupancy(g, shrink)
  if res is None:
    return
  box, occ = res
  if noise is not None:
    value = np.clip(value + amp * noise(g.z[box[0]], g.y[box[1]], g.x[box[2]]), lo, hi)
  sub = hu[box]
  sub += occ * (value - sub)


def _soft_tissue(p, g, noise) -> np.ndarray:
  """Skin, fat and muscle of an elliptic envelope whose axis bends at the knee."""
  s, h = p['scale'], g.h
  oz, oy, ox = p['offset_mm']
  z = g.z - oz
  # Knots along z: ankle side, calf, knee, thigh. The calf's bulk is posterior to the
  # tibia (the shin is subcutaneous) and the knee must cover condyles and patella.
  tib_front = 4 * s + p['tibia_ap'] / 2
  # Clamped so the calf stays inside the field whatever the offset and flexion.
  calf_cy = max(-20 * s, min(0.0, tib_front + p['fat'] + p['skin'] + 6 - p['calf_b']))
  knee_a = max(p['knee_a'], p['notch'] / 2 + p['condyle_ml'] + 8)
  knee_b = max(p['knee_b'], p['_patella_front'] + 6 - 4 * s)
  zk = np.array([-200 * s, -100 * s, 10 * s, 120 * s])
  ak = np.array([0.8 * p['calf_a'], p['calf_a'], knee_a, max(p['thigh_a'], knee_a)])
  bk = np.array([0.8 * p['calf_b'], p['calf_b'], knee_b, max(p['thigh_b'], knee_b)])
  cyk = np.array([calf_cy, calf_cy, 4 * s, 0.0])
  cxk = np.array([4 * s, 6 * s, 0.0, 0.0])
  a, b, cy, cx = (np.interp(z, zk, k).astype(np.float32) for k in (ak, bk, cyk, cxk))
  # Rigid femur/tibia halves joined by a smooth bend between -40 and +40 mm.
  w = np.clip((z + 40 * s) / (80 * s), 0, 1)
  w = w * w * (3 - 2 * w)
  fl = np.radians(p['flexion_deg'] * (w - 0.5))
  vv = np.radians(-p['varus_valgus_deg'] * (w - 0.5))
  xs = np.cos(vv)[:, None] * (g.x[None, :] - ox) - (np.sin(vv) * z)[:, None] - cx[:, None]
  ys = np.cos(fl)[:, None] * (g.y[None, :] - oy) + (np.sin(fl) * z)[:, None] - cy[:, None]
  hu = np.full((g.z.size, g.y.size, g.x.size), -1000.0, np.float32)
  values = (p['hu_skin'], p['hu_fat'], None)
  fat = np.minimum(p['fat'], 0.45 * np.minimum(a, b))  # Leave some muscle in thin limbs.
  for depth, value in zip((0.0, p['skin'], p['skin'] + fat), values):
    aa, bb = (a - depth)[:, None], (b - depth)[:, None]
    u2, v2 = (xs / aa) ** 2, (ys / bb) ** 2
    g2x, g2y = (xs / aa**2) ** 2, (ys / bb**2) ** 2
    f = u2[:, None, :] + v2[:, :, None]
    f -= 1
    grad = g2x[:, None, :] + g2y[:, :, None]
    np.sqrt(grad, out=grad)
    grad *= 2 * h
    grad += 1e-6
    f /= grad
    np.subtract(0.5, f, out=f)
    occ = np.clip(f, 0, 1, out=f)
    if value is None:
      value = noise(g.z, g.y, g.x)
      value *= 3.0
      np.clip(value, -4.8, 4.8, out=value)
      value += p['hu_muscle']
    value -= hu
    value *= occ
    hu += value
  return hu


def _bones(p, g, hu, noise) -> None:
  """Paints joint space, femur, patella, tibia and fibula (outer shells before insides)."""
  s, sh = p['scale'], p['shell']
  off = np.array(p['offset_mm'][::-1])  # (x, y, z)
  rf = _rot(p['flexion_deg'] / 2, -p['varus_valgus_deg'] / 2)
  rt = _rot(-p['flexion_deg'] / 2, p['varus_valgus_deg'] / 2)
  # The femur turns about the condyles' centre, the way it rolls on the plateau.
  pivot = np.array(p['femur_pivot'])
  fem = (rf, off + pivot - rf @ pivot)
  tib = (rt, off)
  trab = dict(noise=noise, amp=45.0, lo=150.0, hi=400.0)
  cort = dict(noise=noise, amp=25.0, lo=1200.0, hi=1800.0)
  shell = dict(noise=noise, amp=20.0, lo=800.0, hi=1200.0)

  # Tibia: plateau slab (top tilted by the posterior slope), metaphyseal cone, shaft.
  pa, pb = p['plateau_ml'] / 2, p['plateau_ap'] / 2
  pcy = -0.05 * p['plateau_ap']
  slope = math.tan(math.radians(p['plateau_slope_deg']))
  top = ((np.array([0, -slope, 1]) / math.hypot(1, slope)).tolist(), 0.0)
  sa, sb, scy = p['tibia_ml'] / 2, p['tibia_ap'] / 2, 4 * s
  z_cone, z_shaft = -18 * s, -75 * s
  joint = _Prim(tib, (0, pcy, 0), (pa - 1, pb - 1, 1), z0=-3.0,
                z1=p['gap_lateral'] + 6, c1=(0, pcy), s1=(pa - 1, pb - 1))
  _paint(hu, g, joint, p['hu_joint'])
  plateau = _Prim(tib, (0, pcy, 0), (pa, pb, 1), z0=z_cone - 2, z1=10 * s, c1=(0, pcy),
                  s1=(pa, pb), clips=(top,))
  cone = _Prim(tib, (0, scy, 0), (sa, sb, 1), z0=z_shaft, z1=z_cone, c1=(0, pcy),
               s1=(0.95 * pa, 0.95 * pb))
  tshaft = _Prim(tib, (0, scy, 0), (sa, sb, 1), z0=-_FAR, z1=z_shaft + 10 * s, c1=(0, scy),
                 s1=(sa, sb))
  _paint(hu, g, plateau, p['hu_shell'], **shell)
  _paint(hu, g, cone, p['hu_shell'], **shell)
  _paint(hu, g, tshaft, p['hu_tibia_cortex'], **cort)
  _paint(hu, g, plateau, p['hu_trabecular'], shrink=sh, **trab)
  _paint(hu, g, cone, p['hu_trabecular'], shrink=sh, **trab)
  canal = dataclasses.replace(tshaft, semi=(sa - p['tibia_cortex'], sb - p['tibia_cortex'], 1),
                              s1=(sa - p['tibia_cortex'], sb - p['tibia_cortex']),
                              z1=z_shaft - 5 * s)
  _paint(hu, g, canal, p['hu_marrow'])

  # Fibula: head ellipsoid posterolateral below the plateau, shaft down to the ankle.
  fr = p['fibula_head_d'] / 2
  fc = (40 * s, -13 * s, -29 * s)
  head = _Prim(tib, fc, (fr, 0.9 * fr, 1.15 * fr))
  fshaft = _Prim(tib, (34 * s, -17 * s, 0), (p['fibula_d'] / 2,) * 2 + (1,), z0=-_FAR,
                 z1=fc[2], c1=fc[:2], s1=(p['fibula_d'] / 2,) * 2)
  _paint(hu, g, head, p['hu_fibula_cortex'], **cort)
  _paint(hu, g, fshaft, p['hu_fibula_cortex'], **cort)
  _paint(hu, g, head, p['hu_trabecular'], shrink=sh, **trab)
  _paint(hu, g, dataclasses.replace(fshaft, z1=fc[2] - fr), p['hu_marrow'],
         shrink=0.3 * p['fibula_d'])

  # Femur: two condyles, an epiphysis notched from below, metaphysis cone, shaft.
  cml, cap, notch = p['condyle_ml'], p['condyle_ap'], p['notch']
  cc = 0.45 * cap
  gm, gl = p['gap_medial'], p['gap_lateral']
  xc = notch / 2 + cml / 2
  # Condyles placed in the tibia's frame so the sampled gaps hold whatever the alignment.
  cond_m, cond_l = (
      _Prim(fem, tuple((pivot + rf.T @ (rt @ np.array(c) - pivot)).tolist()),
            (cml / 2, cap / 2, cc))
      for c in ((-xc, -0.1 * cap, gm + cc), (xc, -0.1 * cap, gl + cc)))
  ez = (gm + gl) / 2 + cc + 8 * s
  ea, eb, ec = notch / 2 + cml - 2 * s, 0.42 * cap, 0.9 * cc
  tn = math.tan(math.radians(40))
  notch_roof = ((np.array([0, -tn, -1]) / math.hypot(1, tn)).tolist(),
                -((gm + gl) / 2 + 0.75 * cc) / math.hypot(1, tn))
  epi = _Prim(fem, (0, 0, ez), (ea, eb, ec), clips=(notch_roof,))
  fr_out, fr_in = p['femur_d'] / 2, p['femur_canal_d'] / 2
  zm0, zm1 = ez, ez + 40 * s
  meta = _Prim(fem, (0, -2 * s, 0), (0.92 * ea, 0.9 * eb, 1), z0=zm0, z1=zm1, c1=(0, 0),
               s1=(fr_out, fr_out))
  fshaft_f = _Prim(fem, (0, 0, 0), (fr_out, fr_out, 1), z0=zm1 - 10 * s, z1=_FAR,
                   c1=(0, 0), s1=(fr_out, fr_out))
  fcanal = dataclasses.replace(fshaft_f, semi=(fr_in, fr_in, 1), s1=(fr_in, fr_in),
                               z0=zm1 + 5 * s)
  for prim in (cond_m, cond_l, epi, meta):
    _paint(hu, g, prim, p['hu_shell'], **shell)
  _paint(hu, g, fshaft_f, p['hu_femur_cortex'], **cort)
  for prim in (cond_m, cond_l, epi, meta):
    _paint(hu, g, prim, p['hu_trabecular'], shrink=sh, **trab)
  _paint(hu, g, fcanal, p['hu_marrow'])

  # Patella: anterior to the trochlea, about 40 mm above the joint line.
  patella = _Prim(fem, (3 * s, p['_patella_y'], p['_patella_z']),
                  (p['patella_w'] / 2, p['patella_t'] / 2, p['patella_h'] / 2))
  _paint(hu, g, patella, p['hu_shell'], **shell)
  _paint(hu, g, patella, p['hu_patella_inside'], shrink=sh, noise=noise, amp=25.0, lo=200.0,
         hi=400.0)


def _derived(p: dict) -> dict:
  """Positions computed from the sizes (also recorded in params)."""
  s, cap, cc = p['scale'], p['condyle_ap'], 0.45 * p['condyle_ap']
  ez = (p['gap_medial'] + p['gap_lateral']) / 2 + cc + 8 * s
  pz = p['gap_medial'] + 40 * s
  eb, ec = 0.42 * cap, 0.9 * cc
  front = eb * math.sqrt(max(0.0, 1 - ((pz - ez) / ec) ** 2))
  py = max(front, 0.3 * eb) + 2 * s + p['patella_t'] / 2
  return dict(_patella_z=pz, _patella_y=py, _patella_front=py + p['patella_t'] / 2,
              femur_pivot=[0.0, -0.1 * cap, (p['gap_medial'] + p['gap_lateral']) / 2 + cc])


def make_phantom(seed: int, *, spacing_mm: float = 1.0,
                 shape_mm: tuple[float, float, float] = DEFAULT_SHAPE_MM) -> Phantom:
  """Builds patient `seed` on an isotropic grid of `spacing_mm` covering `shape_mm` (z, y, x).

  Deterministic: the same arguments give identical bytes.
  """
  if not spacing_mm > 0:
    raise ValueError(f'spacing_mm must be > 0, got {spacing_mm!r}')
  if len(shape_mm) != 3 or min(shape_mm) <= 0:
    raise ValueError(f'shape_mm must be three positive lengths (z, y, x), got {shape_mm!r}')
  p = sample_params(seed)
  p.update(_derived(p))
  g = _make_grid(shape_mm, float(spacing_mm))
  rng = np.random.default_rng(p['noise_seed'])
  soft = _Noise(rng, shape_mm, _NOISE_SOFT_MM)
  bone = _Noise(rng, shape_mm, _NOISE_BONE_MM)
  hu = _soft_tissue(p, g, soft)
  _bones(p, g, hu, bone)
  params = {k.lstrip('_'): v for k, v in p.items()}
  h = float(spacing_mm)
  return Phantom(hu=hu, spacing_mm=(h, h, h), params=params)


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--seed', type=int, required=True)
  ap.add_argument('--out', help='NIfTI path (.nii.gz / .nii; any SimpleITK extension)')
  ap.add_argument('--spacing', type=float, default=1.0, help='voxel size in mm')
  ap.add_argument('--png', help='quick-look PNG path')
  args = ap.parse_args(argv)
  ph = make_phantom(args.seed, spacing_mm=args.spacing)
  print(json.dumps(ph.params, indent=1, sort_keys=True))
  if args.out:
    from score_sde_knee import ct_io  # pylint: disable=g-import-not-at-top
    ct_io.write_ct(args.out, ph.hu, ph.spacing_mm)
  if args.png:
    from score_sde_knee import visualize  # pylint: disable=g-import-not-at-top
    visualize.save_phantom_png(args.png, ph)


if __name__ == '__main__':
  main()
