"""Back-projection and CT reconstruction for the cone-beam scan of `projector.project`.

Three operators on the same volume grid, geometry and angles as `project` (volumes
(z, y, x) in 1/mm, sinograms (views, rows, cols) of line integrals):

- `backproject`: the exact transpose A^T of `project` (A), from `backprojector`: every
  bilinear sample of the projector becomes a scatter-add of the same weights (the
  dot-product test holds to float32 rounding). What iterative methods and gradients
  need, not an inverse.
- `reconstruct_fdk`: Feldkamp-Davis-Kress for a full 360 deg circular orbit: cosine
  weighting, a ramp filter along detector rows, and a voxel-driven back-projection
  weighted by (R / L)^2, with L the voxel's depth along the central ray. Exact in the
  orbit plane z = 0; off the plane it has the usual cone-beam approximation.
- `reconstruct_cgls` (least squares, monotone residual) and `reconstruct_sirt`
  (optionally non-negative): iterative, warm-startable, built on A and A^T.
"""
from collections.abc import Sequence
import dataclasses
import functools
import math

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from score_sde_knee.xray import backprojector
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import projector

WINDOWS = ('ram-lak', 'shepp-logan', 'hann')


@dataclasses.dataclass(frozen=True)
class _Scan:
  """The static description of one scan (hashable: it keys the compilations)."""
  volume_shape: tuple[int, int, int]
  spacing_mm: tuple[float, float, float]
  geometry: geometry_lib.ConeBeamGeometry
  angles_deg: tuple[float, ...]
  offset_mm: tuple[float, float, float]
  max_step_mm: float
  view_chunk: int

  def project(self, volume: jax.Array, skip_air: bool = True) -> jax.Array:
    return projector.project(volume, self.spacing_mm, self.geometry, np.array(self.angles_deg),
                             offset_mm=self.offset_mm, max_step_mm=self.max_step_mm,
                             view_chunk=self.view_chunk, skip_air=skip_air)

  def backproject(self, sinogram: jax.Array) -> jax.Array:
    return backprojector.transpose_of_project(
        sinogram, self.volume_shape, self.spacing_mm, self.geometry, self.angles_deg,
        self.offset_mm, self.max_step_mm)


def _scan(name: str, sinogram_shape, volume_shape, spacing_mm, geometry, angles_deg,
          offset_mm, max_step_mm=2.0, view_chunk=8) -> _Scan:
  """Checks the arguments shared by every entry point; raises ValueError naming `name`."""
  if not isinstance(geometry, geometry_lib.ConeBeamGeometry):
    raise ValueError(f'{name}: geometry must be a ConeBeamGeometry, got {geometry!r}')
  try:
    shape = tuple(int(n) for n in volume_shape)
  except (TypeError, ValueError):
    shape = ()
  if len(shape) != 3 or min(shape) < 1 or shape != tuple(volume_shape):
    raise ValueError(f'{name}: volume_shape must be 3 positive integers (z, y, x), got '
                     f'{volume_shape!r}')
  triples = {}
  for key, values, positive in (('spacing_mm', spacing_mm, True),
                                ('offset_mm', offset_mm, False)):
    try:
      triple = tuple(float(x) for x in values)
    except (TypeError, ValueError):
      triple = ()
    if len(triple) != 3 or not all(math.isfinite(x) and (x > 0 or not positive)
                                   for x in triple):
      kind = 'positive finite' if positive else 'finite'
      raise ValueError(f'{name}: {key} must be 3 {kind} numbers (z, y, x) in mm, got '
                       f'{values!r}')
    triples[key] = triple
  if angles_deg is None:
    angles_deg = geometry.angles_deg()
  try:
    angles = np.asarray(angles_deg, np.float64)
  except jax.errors.TracerArrayConversionError as e:
    raise ValueError(f'{name}: angles_deg must be concrete numbers, not traced values') from e
  if angles.ndim != 1 or angles.size == 0 or not np.all(np.isfinite(angles)):
    raise ValueError(f'{name}: angles_deg must be a non-empty 1-D list of finite degrees, '
                     f'got {angles_deg!r}')
  expected = (angles.size, geometry.detector_rows, geometry.detector_cols)
  if sinogram_shape is not None and tuple(sinogram_shape) != expected:
    raise ValueError(f'{name}: sinogram must have shape (views, rows, cols) = {expected} '
                     f'({angles.size} angles, a {expected[1]} x {expected[2]} detector), '
                     f'got {tuple(sinogram_shape)}')
  return _Scan(shape, triples['spacing_mm'], geometry, tuple(float(a) for a in angles),
               triples['offset_mm'], float(max_step_mm), int(view_chunk))


def _sinogram(name: str, sinogram) -> jax.Array:
  sinogram = jnp.asarray(sinogram, jnp.float32)
  if sinogram.ndim != 3:
    raise ValueError(f'{name}: sinogram must be a 3-D array (views, rows, cols), got shape '
                     f'{sinogram.shape}')
  return sinogram


def backproject(sinogram, volume_shape: Sequence[int], spacing_mm: Sequence[float],
                geometry: geometry_lib.ConeBeamGeometry,
                angles_deg: Sequence[float] | np.ndarray | None = None, *,
                offset_mm: Sequence[float] = (0.0, 0.0, 0.0),
                max_step_mm: float = 2.0) -> jax.Array:
  """A^T y: the exact transpose of `project` with the same arguments.

  For every volume x of `volume_shape` and sinogram y, <project(x, ...), y> equals
  <x, backproject(y, ...)> up to float32 rounding. Arguments are those of `project`
  (max_step_mm included: merging layers changes A, and so A^T); sinogram has shape
  (len(angles), detector_rows, detector_cols). Returns a (z, y, x) float32 volume
  (units of the sinogram times mm).

  Raises:
    ValueError: on a sinogram of the wrong shape, a bad volume shape, non-positive
      spacing, non-finite offsets or angles.
  """
  sinogram = _sinogram('backproject', sinogram)
  scan = _scan('backproject', sinogram.shape, volume_shape, spacing_mm, geometry, angles_deg,
               offset_mm, max_step_mm)
  return _backproject(sinogram, scan)


@functools.partial(jax.jit, static_argnums=1)
def _backproject(sinogram, scan: _Scan):
  return scan.backproject(sinogram)


# ------------------------------------------------------------------------------------ FDK


def reconstruct_fdk(sinogram, volume_shape: Sequence[int], spacing_mm: Sequence[float],
                    geometry: geometry_lib.ConeBeamGeometry,
                    angles_deg: Sequence[float] | np.ndarray | None = None, *,
                    offset_mm: Sequence[float] = (0.0, 0.0, 0.0),
                    window: str = 'ram-lak') -> jax.Array:
  """Feldkamp-Davis-Kress reconstruction from a full 360 deg circular orbit.

  sinogram: (views, rows, cols) line integrals as `project` returns them (no exp()).
  Angles must be equally spaced and cover 360 deg (e.g. the default 60 views at 6 deg).
  window: 'ram-lak' (the bare ramp), 'shepp-logan' or 'hann' (smoother, less noise).
  Returns the (z, y, x) float32 attenuation in 1/mm on the grid of `project`'s conventions.

  The derivation in this geometry (docs/geometry.md): a voxel at p = (x, y, z) lies at
  depth L = R + s along the central ray, s = -x sin(theta) + y cos(theta), and projects to
  u = D (x cos(theta) + y sin(theta)) / L, v = D z / L on the detector (R source-isocentre,
  D source-detector). On the virtual detector through the isocentre (coordinates scaled
  by R / D, pitch h = pitch R / D) FDK reads
    f(p) = 1/2 sum_views dtheta (R / L)^2 q(u, v),
    q = h * [ (R / sqrt(R^2 + u'^2 + v'^2)) p ] (*) ramp,
  the ramp's discrete kernel being Ram-Lak's (1 / (4 h^2) at 0, -1 / (pi n h)^2 at odd n),
  convolved along each row with zero padding to at least twice the row length. The 1/2
  counts each ray twice over the full orbit. With p in 1/mm x mm, f comes out in 1/mm.

  Raises:
    ValueError: on a sinogram of the wrong shape, an orbit that is not a full 360 deg of
      equally spaced views, an unknown window, a bad volume shape or spacing.
  """
  sinogram = _sinogram('reconstruct_fdk', sinogram)
  scan = _scan('reconstruct_fdk', sinogram.shape, volume_shape, spacing_mm, geometry,
               angles_deg, offset_mm)
  if window not in WINDOWS:
    raise ValueError(f'reconstruct_fdk: window must be one of {WINDOWS}, got {window!r}')
  angles = np.asarray(scan.angles_deg)
  steps = np.diff(angles)
  full = angles.size >= 2 and np.allclose(steps, steps[0], rtol=0, atol=1e-6) and (
      abs(abs(steps[0]) * angles.size - 360.0) < 1e-6)
  if not full:
    raise ValueError('reconstruct_fdk: needs a full 360 deg circular orbit of equally '
                     f'spaced views (step * views = 360), got angles {angles.tolist()}')
  return _fdk(sinogram, scan, window)


def ramp_filter(num_cols: int, pitch_mm: float, window: str = 'ram-lak') -> np.ndarray:
  """The frequency response (padded_cols,) of the discrete ramp (times pitch_mm), for rows
  zero-padded to padded_cols = the power of two >= 2 num_cols."""
  n = 1 << max(1, (2 * num_cols - 1).bit_length())
  k = np.arange(n)
  k = np.minimum(k, n - k)  # Circular distance: the kernel is even.
  kernel = np.zeros(n)
  kernel[0] = 1.0 / (4.0 * pitch_mm**2)
  odd = k % 2 == 1
  kernel[odd] = -1.0 / (np.pi * k[odd] * pitch_mm) ** 2
  response = np.real(np.fft.fft(kernel)) * pitch_mm  # The convolution's d(u).
  f = np.abs(np.fft.fftfreq(n))  # cycles per sample, Nyquist at 0.5.
  if window == 'shepp-logan':
    response *= np.sinc(f)  # sin(pi f) / (pi f): sinc of f / (2 f_nyquist).
  elif window == 'hann':
    response *= 0.5 * (1.0 + np.cos(2.0 * np.pi * f))
  return response.astype(np.float32)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _fdk(sinogram, scan: _Scan, window: str):
  g = scan.geometry
  r_src, sdd, pitch = g.source_to_isocentre_mm, g.source_to_detector_mm, g.pixel_pitch_mm
  rows, cols = g.detector_rows, g.detector_cols
  v, u = g.detector_coords_mm()
  # R / sqrt(R^2 + u'^2 + v'^2) on the virtual detector equals D / sqrt(D^2 + u^2 + v^2).
  cosine = sdd / np.sqrt(sdd**2 + u[None, :] ** 2 + v[:, None] ** 2)
  response = ramp_filter(cols, pitch * r_src / sdd, window)
  n = response.shape[0]
  weighted = sinogram * jnp.asarray(cosine, jnp.float32)
  spectrum = jnp.fft.rfft(weighted, n=n, axis=-1) * jnp.asarray(response[:n // 2 + 1])
  filtered = jnp.fft.irfft(spectrum, n=n, axis=-1)[..., :cols]
  # A zero border: voxels projecting off the detector read 0 after clipping.
  filtered = jnp.pad(filtered, ((0, 0), (1, 1), (1, 1)))

  nz, ny, nx = scan.volume_shape
  sz, sy, sx = scan.spacing_mm
  oz, oy, ox = scan.offset_mm
  z = jnp.asarray(oz + (np.arange(nz) - (nz - 1) / 2) * sz, jnp.float32)[:, None, None]
  y = jnp.asarray(oy + (np.arange(ny) - (ny - 1) / 2) * sy, jnp.float32)[:, None]
  x = jnp.asarray(ox + (np.arange(nx) - (nx - 1) / 2) * sx, jnp.float32)[None, :]
  theta = np.deg2rad(np.asarray(scan.angles_deg))
  trig = jnp.asarray(np.stack([np.sin(theta), np.cos(theta)], axis=1), jnp.float32)

  def view(volume, inputs):
    image, (sin, cos) = inputs  # (rows + 2, cols + 2)
    depth = r_src - x * sin + y * cos  # L = R + s, (ny, nx)
    # Padded column index of the voxel's projection, clipped into the zero border.
    col = jnp.clip(sdd * (x * cos + y * sin) / (depth * pitch) + (cols + 1) / 2, 0.0,
                   cols + 1.0)
    c_lo = jnp.minimum(jnp.floor(col), cols)
    w_c = col - c_lo
    c = c_lo.astype(jnp.int32)
    # Interpolate the columns first: (rows + 2, ny, nx), then the rows per voxel.
    lines = image[:, c] * (1.0 - w_c) + image[:, c + 1] * w_c
    row = jnp.clip((rows + 1) / 2 - sdd * z / (depth * pitch), 0.0, rows + 1.0)
    r_lo = jnp.minimum(jnp.floor(row), rows)
    k = r_lo.astype(jnp.int32)
    lo = jnp.take_along_axis(lines, k, axis=0)
    hi = jnp.take_along_axis(lines, k + 1, axis=0)
    weight = (r_src / depth) ** 2
    return volume + weight * (lo + (hi - lo) * (row - r_lo)), None

  volume, _ = lax.scan(view, jnp.zeros((nz, ny, nx), jnp.float32), (filtered, trig))
  return volume * jnp.float32(0.5 * 2.0 * np.pi / len(scan.angles_deg))


# ------------------------------------------------------------------------------ iterative


def reconstruct_cgls(sinogram, volume_shape: Sequence[int], spacing_mm: Sequence[float],
                     geometry: geometry_lib.ConeBeamGeometry,
                     angles_deg: Sequence[float] | np.ndarray | None = None, *,
                     offset_mm: Sequence[float] = (0.0, 0.0, 0.0), n_iters: int = 10,
                     x0=None, max_step_mm: float = 2.0,
                     view_chunk: int = 8) -> tuple[jax.Array, jax.Array]:
  """Least squares min ||A x - p|| by conjugate gradients on the normal equations (CGLS).

  A is `project` with these arguments, A^T `backproject`; x0 (default zeros) is the warm
  start, e.g. an FDK volume or the previous reconstruction of a sampler. Each iteration
  costs one projection and one back-projection. In exact arithmetic the residual
  ||A x_k - p|| never grows (CGLS minimises it over a growing Krylov space).

  Returns (volume (z, y, x) float32 in 1/mm, residual norms (n_iters + 1,) float32:
  ||A x_k - p|| for k = 0 (the start) to n_iters, from CGLS's recursion).

  Raises:
    ValueError: as `backproject`, and on n_iters < 0 or an x0 of the wrong shape.
  """
  sinogram, scan, x0 = _iterative_args('reconstruct_cgls', sinogram, volume_shape,
                                       spacing_mm, geometry, angles_deg, offset_mm, n_iters,
                                       x0, max_step_mm, view_chunk)
  return _cgls(sinogram, x0, scan, int(n_iters))


def reconstruct_sirt(sinogram, volume_shape: Sequence[int], spacing_mm: Sequence[float],
                     geometry: geometry_lib.ConeBeamGeometry,
                     angles_deg: Sequence[float] | np.ndarray | None = None, *,
                     offset_mm: Sequence[float] = (0.0, 0.0, 0.0), n_iters: int = 20,
                     x0=None, nonneg: bool = True, max_step_mm: float = 2.0,
                     view_chunk: int = 8) -> tuple[jax.Array, jax.Array]:
  """SIRT: x <- x + C A^T R (p - A x), with R = 1 / (A 1) and C = 1 / (A^T 1).

  The row and column sums make each step a weighted average of the rays' corrections,
  which converges without a step size to tune. nonneg=True projects onto x >= 0 after
  every step (attenuation is never negative). Arguments and returns as
  `reconstruct_cgls`; residual norms are ||A x_k - p|| for k = 0 to n_iters.
  """
  sinogram, scan, x0 = _iterative_args('reconstruct_sirt', sinogram, volume_shape,
                                       spacing_mm, geometry, angles_deg, offset_mm, n_iters,
                                       x0, max_step_mm, view_chunk)
  return _sirt(sinogram, x0, scan, int(n_iters), bool(nonneg))


def _iterative_args(name, sinogram, volume_shape, spacing_mm, geometry, angles_deg,
                    offset_mm, n_iters, x0, max_step_mm, view_chunk):
  sinogram = _sinogram(name, sinogram)
  scan = _scan(name, sinogram.shape, volume_shape, spacing_mm, geometry, angles_deg,
               offset_mm, max_step_mm, view_chunk)
  if isinstance(n_iters, bool) or not isinstance(n_iters, (int, np.integer)) or n_iters < 0:
    raise ValueError(f'{name}: n_iters must be an integer >= 0, got {n_iters!r}')
  x0 = jnp.zeros(scan.volume_shape, jnp.float32) if x0 is None else jnp.asarray(
      x0, jnp.float32)
  if x0.shape != scan.volume_shape:
    raise ValueError(f'{name}: x0 must have the volume shape {scan.volume_shape}, got '
                     f'{x0.shape}')
  return sinogram, scan, x0


def _ratio(num, den):
  """num / den, 0 where den is 0 (a converged or empty problem must not make NaNs)."""
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _cgls(sinogram, x, scan: _Scan, n_iters: int):
  r = sinogram - scan.project(x)
  s = scan.backproject(r)
  norms = jnp.zeros(n_iters + 1, jnp.float32).at[0].set(jnp.linalg.norm(r))

  def step(k, carry):
    x, r, d, gamma, norms = carry
    q = scan.project(d)
    alpha = _ratio(gamma, jnp.vdot(q, q))
    x = x + alpha * d
    r = r - alpha * q
    s = scan.backproject(r)
    gamma_new = jnp.vdot(s, s)
    d = s + _ratio(gamma_new, gamma) * d
    return x, r, d, gamma_new, norms.at[k + 1].set(jnp.linalg.norm(r))

  x, *_, norms = lax.fori_loop(0, n_iters, step, (x, r, s, jnp.vdot(s, s), norms))
  return x, norms


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _sirt(sinogram, x, scan: _Scan, n_iters: int, nonneg: bool):
  row_weight = _ratio(1.0, scan.project(jnp.ones(scan.volume_shape, jnp.float32)))
  col_weight = _ratio(1.0, scan.backproject(jnp.ones_like(sinogram)))
  if nonneg:
    x = jnp.maximum(x, 0.0)

  def step(k, carry):
    x, norms = carry
    r = sinogram - scan.project(x)
    x = x + col_weight * scan.backproject(row_weight * r)
    if nonneg:
      x = jnp.maximum(x, 0.0)
    return x, norms.at[k].set(jnp.linalg.norm(r))

  x, norms = lax.fori_loop(0, n_iters, step, (x, jnp.zeros(n_iters + 1, jnp.float32)))
  return x, norms.at[n_iters].set(jnp.linalg.norm(sinogram - scan.project(x)))
