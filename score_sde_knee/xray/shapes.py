"""Analytic solids painted into a voxel grid with partial-volume edges, and smooth noise.

The building blocks of the knee phantom (phantom.py). A solid's occupancy of a voxel is
clip(0.5 - d / h, 0, 1) with d a first-order signed distance F / |grad F| and h the voxel
size, so a flat surface through a voxel's centre fills half of it (tests/shapes_test.py
checks the volumes against closed forms). Coordinates are world millimetres; grids are
centred on 0, so a 2 mm grid's voxels are exactly 2x2x2 blocks of the 1 mm grid's.
"""
import dataclasses
import math

import numpy as np
from scipy import ndimage


@dataclasses.dataclass(frozen=True)
class Grid:
  h: float
  z: np.ndarray  # Voxel-centre world coordinates (mm), float32, one array per axis.
  y: np.ndarray
  x: np.ndarray


def make_grid(shape_mm, h: float) -> Grid:
  axes = []
  for ext in shape_mm:
    n = max(1, int(round(ext / h)))
    axes.append(((np.arange(n) + 0.5) * h - n * h / 2).astype(np.float32))
  return Grid(float(h), *axes)


class Noise:
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
class Prim:
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

  def occupancy(self, g: Grid, shrink: float = 0.0):
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


def paint(hu, g, prim, value, noise=None, amp=0.0, lo=-1000.0, hi=3000.0, shrink=0.0):
  """Blends `value` (+ amp * noise, clipped to [lo, hi]) into `hu` where `prim` is."""
  res = prim.occupancy(g, shrink)
  if res is None:
    return
  box, occ = res
  if noise is not None:
    value = np.clip(value + amp * noise(g.z[box[0]], g.y[box[1]], g.x[box[2]]), lo, hi)
  sub = hu[box]
  sub += occ * (value - sub)
