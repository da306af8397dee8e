"""Exact line integrals through ellipsoids (float64 numpy): the projector's reference.

Independent of `projector`: rays are built here from the geometry's fields, and each
ray's chord through an ellipsoid comes from the roots of a quadratic. `voxelise` puts the
same ellipsoids on a voxel grid (partial voxels supersampled), so that projecting the
voxels can be compared with the exact integrals. Coordinates are world mm (x, y, z),
isocentre at the origin; volumes are (z, y, x) arrays as in `projector.project`.
"""
from collections.abc import Sequence
import dataclasses
import math

import numpy as np

from score_sde_knee.xray import geometry as geometry_lib


@dataclasses.dataclass(frozen=True)
class Ellipsoid:
  """A uniform ellipsoid; densities of overlapping ellipsoids add up."""
  centre_mm: tuple[float, float, float]      # (x, y, z)
  semi_axes_mm: tuple[float, float, float]   # along its own axes before rotation
  density: float                             # e.g. attenuation in 1/mm
  rotation_z_deg: float = 0.0                # rotation of its axes about +z

  def world_to_unit(self) -> tuple[np.ndarray, np.ndarray]:
    """(M, c): the ellipsoid is |M (p - c)| <= 1 for world points p (x, y, z)."""
    t = math.radians(self.rotation_z_deg)
    rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0],
                    [0, 0, 1]])
    return np.diag(1.0 / np.asarray(self.semi_axes_mm, np.float64)) @ rot.T, np.asarray(
        self.centre_mm, np.float64)


def rays(geometry: geometry_lib.ConeBeamGeometry,
         angles_deg: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  """(sources (V, 3), pixel centres (V, rows, cols, 3)) in world mm, float64."""
  g = geometry
  theta = np.deg2rad(np.asarray(angles_deg, np.float64))[:, None, None]
  rows = np.arange(g.detector_rows, dtype=np.float64)[None, :, None]
  cols = np.arange(g.detector_cols, dtype=np.float64)[None, None, :]
  height = ((g.detector_rows - 1) / 2 - rows) * g.pixel_pitch_mm   # row 0 on top
  across = (cols - (g.detector_cols - 1) / 2) * g.pixel_pitch_mm
  # Detector centre lies sdd - sid beyond the isocentre, opposite the source.
  behind = g.source_to_detector_mm - g.source_to_isocentre_mm
  x = -behind * np.sin(theta) + across * np.cos(theta)
  y = behind * np.cos(theta) + across * np.sin(theta)
  pixels = np.stack(np.broadcast_arrays(x, y, height), axis=-1)
  theta = theta[:, 0, 0]
  r = g.source_to_isocentre_mm
  sources = np.stack([r * np.sin(theta), -r * np.cos(theta), np.zeros_like(theta)], axis=-1)
  return sources, pixels


def line_integrals(ellipsoids: Sequence[Ellipsoid], sources: np.ndarray,
                   ends: np.ndarray) -> np.ndarray:
  """Sum over ellipsoids of density x chord length of the segments source -> end.

  sources: (V, 3); ends: (V, ..., 3) world mm. Returns (V, ...) float64.
  """
  sources = np.asarray(sources, np.float64)
  ends = np.asarray(ends, np.float64)
  src = sources.reshape(sources.shape[:1] + (1,) * (ends.ndim - 2) + (3,))
  d = ends - src
  total = np.zeros(ends.shape[:-1])
  for e in ellipsoids:
    m, c = e.world_to_unit()
    p = (src - c) @ m.T
    q = d @ m.T
    # |p + t q|^2 = 1 on the surface; the chord is (t2 - t1) |d| within t in [0, 1].
    a = np.sum(q * q, axis=-1)
    b = np.sum(p * q, axis=-1)
    cc = np.sum(p * p, axis=-1) - 1.0
    disc = np.maximum(b * b - a * cc, 0.0)
    root = np.sqrt(disc)
    t1 = np.clip((-b - root) / a, 0.0, 1.0)
    t2 = np.clip((-b + root) / a, 0.0, 1.0)
    total += e.density * (t2 - t1) * np.linalg.norm(d, axis=-1)
  return total


def voxelise(ellipsoids: Sequence[Ellipsoid], shape: tuple[int, int, int],
             spacing_mm: tuple[float, float, float],
             offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
             supersample: int = 5) -> np.ndarray:
  """Mean density over each voxel of a (z, y, x) grid, float32.

  Voxel centres follow `projector.project`: x = offset_x + (i - (nx - 1) / 2) sx, etc.
  Voxels cut by a surface are averaged over supersample^3 points; the others are whole.
  """
  sz, sy, sx = spacing_mm
  axes = [(o + (np.arange(n) - (n - 1) / 2) * s)
          for o, n, s in zip(offset_mm, shape, spacing_mm)]  # z, y, x centres
  half_diag = 0.5 * math.sqrt(sx * sx + sy * sy + sz * sz)
  sub = (np.arange(supersample) + 0.5) / supersample - 0.5
  sub_pts = np.stack(np.meshgrid(sub * sx, sub * sy, sub * sz, indexing='ij'),
                     axis=-1).reshape(-1, 3)  # (x, y, z) offsets
  volume = np.zeros(shape, np.float64)
  z, y, x = axes
  for e in ellipsoids:
    m, c = e.world_to_unit()
    # rho(p) = |M (p - c)| is Lipschitz with constant 1 / (smallest semi-axis): voxels
    # whose centre is further than that from the surface are wholly inside or outside.
    margin = half_diag / min(e.semi_axes_mm)
    # Only the voxels in a box around the ellipsoid's bounding sphere need a look.
    reach = max(e.semi_axes_mm) + half_diag
    box = [np.flatnonzero(np.abs(a - ca) <= reach) for a, ca in zip((z, y, x), c[::-1])]
    if any(b.size == 0 for b in box):
      continue
    bz, by, bx = (slice(b[0], b[-1] + 1) for b in box)
    pts = np.stack(np.meshgrid(x[bx], y[by], z[bz], indexing='ij'), axis=-1)
    rho = np.linalg.norm((pts - c) @ m.T, axis=-1).transpose(2, 1, 0)  # (z, y, x)
    part = volume[bz, by, bx]
    part += e.density * (rho < 1 - margin)
    kk, jj, ii = np.nonzero(np.abs(rho - 1) <= margin)
    centres = np.stack([x[bx][ii], y[by][jj], z[bz][kk]], axis=-1)
    for start in range(0, len(centres), 4096):
      block = centres[start:start + 4096, None, :] + sub_pts[None]
      inside = np.linalg.norm((block - c) @ m.T, axis=-1) <= 1.0
      part[kk[start:start + 4096], jj[start:start + 4096], ii[start:start + 4096]] += (
          e.density * inside.mean(axis=1))
  return volume.astype(np.float32)


def knee_like(scale: float = 1.0) -> list[Ellipsoid]:
  """A leg-like scene: soft tissue, two bones, a patella, a dense and a hollow feature.

  scale: sizes and positions multiply by it (1.0 fits a 256 mm cube, about 0.45 a 112 mm
  one). Densities in 1/mm, roughly water and bone.
  """
  s = scale
  spec = [
      ((0, 0, 0), (75, 65, 120), 0.019, 10.0),          # soft tissue envelope
      ((4, 6, 50), (26, 22, 62), 0.022, 0.0),           # femur
      ((4, 6, 50), (14, 11, 52), -0.012, 0.0),          # marrow (less dense)
      ((-2, 4, -48), (30, 24, 55), 0.020, -15.0),       # tibia
      ((6, -42, 22), (22, 10, 18), 0.025, 20.0),        # patella
      ((40, 15, -40), (9, 9, 30), 0.024, 0.0),          # fibula-like
      ((-30, -20, 70), (5, 4, 6), 0.05, 0.0),           # small dense insert
  ]
  return [Ellipsoid((cx * s, cy * s, cz * s), (a * s, b * s, c * s), mu, rot)
          for (cx, cy, cz), (a, b, c), mu, rot in spec]
