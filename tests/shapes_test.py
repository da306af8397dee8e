"""The phantom's solids against closed-form volumes, and its noise against its lattice."""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from score_sde_knee.xray import shapes

FIELD_MM = (48.0, 44.0, 40.0)
# A tilted, shifted frame, so that no face lines up with the grid.
FRAME = (Rotation.from_euler('xyz', [23, -31, 12], degrees=True).as_matrix(),
         np.array([1.3, -2.1, 0.7]))


def _volume(prim: shapes.Prim, h: float, shrink: float = 0.0) -> float:
  g = shapes.make_grid(FIELD_MM, h)
  _, occ = prim.occupancy(g, shrink)
  assert occ.min() >= 0 and occ.max() <= 1
  return float(occ.astype(np.float64).sum()) * h**3


def test_grid_is_centred_and_nests():
  fine, coarse = shapes.make_grid(FIELD_MM, 1.0), shapes.make_grid(FIELD_MM, 2.0)
  for f, c in zip((fine.z, fine.y, fine.x), (coarse.z, coarse.y, coarse.x)):
    assert f.mean() == pytest.approx(0, abs=1e-5)
    np.testing.assert_allclose(c, f.reshape(-1, 2).mean(axis=1), atol=1e-5)


@pytest.mark.parametrize('shrink', [0.0, 1.5])
def test_ellipsoid_volume(shrink):
  a, b, c = 12.0, 9.0, 7.0
  prim = shapes.Prim(FRAME, centre=(1.0, -0.5, 2.0), semi=(a, b, c))
  exact = 4 / 3 * math.pi * (a - shrink) * (b - shrink) * (c - shrink)
  errors = [abs(_volume(prim, h, shrink) / exact - 1) for h in (1.0, 0.5)]
  assert errors[1] < 0.005, errors
  assert errors[1] <= errors[0] + 1e-3, errors  # no worse on the finer grid


def test_elliptic_frustum_volume():
  # Semi-axes linear along local z: the integral of pi a(z) b(z) over [z0, z1].
  a0, b0, a1, b1, z0, z1 = 8.0, 6.0, 5.0, 7.0, -12.0, 10.0
  prim = shapes.Prim(FRAME, centre=(0.0, 1.0, 0.0), semi=(a0, b0, 1.0), z0=z0, z1=z1,
                     c1=(2.0, -1.0), s1=(a1, b1))
  da, db = a1 - a0, b1 - b0
  exact = math.pi * (z1 - z0) * (a0 * b0 + (a0 * db + b0 * da) / 2 + da * db / 3)
  assert _volume(prim, 0.5) == pytest.approx(exact, rel=0.005)


def test_half_space_clip_through_the_centre_halves_an_ellipsoid():
  normal = np.array([0.3, -0.4, 0.866])
  normal /= np.linalg.norm(normal)
  centre = np.array([1.0, -0.5, 2.0])
  whole = shapes.Prim(FRAME, centre=tuple(centre), semi=(12.0, 9.0, 7.0))
  clip = (tuple(normal), float(normal @ centre))  # n . p <= d: the plane through the centre
  half = shapes.Prim(FRAME, centre=tuple(centre), semi=(12.0, 9.0, 7.0), clips=(clip,))
  exact = 2 / 3 * math.pi * 12.0 * 9.0 * 7.0
  assert _volume(half, 0.5) == pytest.approx(exact, rel=0.005)
  assert _volume(half, 0.5) == pytest.approx(_volume(whole, 0.5) / 2, rel=0.002)


def test_occupancy_outside_the_field_is_none():
  far = shapes.Prim((np.eye(3), np.array([0.0, 0.0, 500.0])), semi=(5.0, 5.0, 5.0))
  assert far.occupancy(shapes.make_grid(FIELD_MM, 1.0)) is None


def test_paint_blends_by_occupancy():
  g = shapes.make_grid(FIELD_MM, 1.0)
  prim = shapes.Prim(FRAME, semi=(10.0, 8.0, 6.0))
  hu = np.full((g.z.size, g.y.size, g.x.size), -1000.0, np.float32)
  shapes.paint(hu, g, prim, 400.0)
  box, occ = prim.occupancy(g)
  expected = np.full_like(hu, -1000.0)
  expected[box] = -1000.0 + occ * 1400.0
  np.testing.assert_allclose(hu, expected, atol=1e-3)
  assert (hu == 400.0).any() and ((hu > -1000) & (hu < 400)).any()  # inside, and edges


def test_noise_interpolates_its_lattice_in_world_millimetres():
  noise = shapes.Noise(np.random.default_rng(0), FIELD_MM, 4.0)
  assert noise.lat.std() == pytest.approx(1.0, abs=1e-5)
  # At lattice nodes the trilinear interpolant is the node's value, whatever the grid.
  iz, iy, ix = np.array([3, 4]), np.array([5, 7, 8]), np.array([2, 6])
  node = lambda i, k: (noise.origin[k] + i * noise.g).astype(np.float32)
  got = noise(node(iz, 0), node(iy, 1), node(ix, 2))
  np.testing.assert_allclose(got, noise.lat[np.ix_(iz, iy, ix)], atol=1e-5)
  # Halfway between two nodes along x: their mean.
  mid = noise(node(iz, 0), node(iy, 1), node(ix, 2) + noise.g / 2)
  np.testing.assert_allclose(mid, noise.lat[np.ix_(iz, iy, ix + 1)] / 2
                             + noise.lat[np.ix_(iz, iy, ix)] / 2, atol=1e-5)
