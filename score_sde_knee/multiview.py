"""Consistent multi-view sampling: the V views of one leg drawn as projections of one body.

Sampled one by one (sampling.py), the 60 views of a leg are 60 independent draws: no
single volume projects to all of them, and a CT reconstructed from them averages their
disagreements into a blur. Here the views are one batch (V, H, W, 1), masks and all, and
the usual predictor-corrector loop runs unchanged but for a data-consistency step
(DiffusionMBIR, Chung et al. CVPR 2023; DOLCE, Liu et al. ICCV 2023), through
sampling.Projection: at chosen predictor steps the denoised (Tweedie) estimates of all
views, x0 = x + sigma^2 s(x, t), are taken as a sinogram, a volume is reconstructed from
them (a few CGLS iterations warm-started from the previous step's volume), and its
re-projection replaces x0; x moves by the same amount, so the step continues from
x0' + (x - x0). The volume is a least-squares one, negative voxels and all: clipping
CGLS's volume at 0 (`nonneg`) is not the non-negative least-squares solution, and on the
test's exact projections it leaves a relative residual of 0.14 where the plain solution
reaches 0.006 in 20 iterations (tests/multiview_test.py); attenuation >= 0 would need a
projected method (SIRT's), at several times the iterations.

Units and the normalisation constant. knee_drr's images are the line integrals of the
attenuation mu divided by one constant per patient, c = the largest line integral over
all 60 views (drr.normalise; the clip to [0, 1] never acts, since no pixel exceeds the
maximum), so image = A mu / c = A (mu / c): the constraint is linear in the images for
any c, and the step reconstructs v = mu / c straight from them. c cannot be read off the
masks (the contour is image > 0.1, the bone mask a projection of thresholded bone: both
are invariant to the scale), and the consistency step does not need it: c only converts
v to attenuation (mu = c v) and HU, e.g. with the true c of a test patient, or one fitted
so that soft tissue reads as water.

The volume grid (`volume_grid`): n^3 voxels centred at the isocentre, n x n across the
field of view at the isocentre (192 mm for knee_drr's detector at any resolution: 3 mm
voxels at n = 64), and in z as high as the cone at the far side of that field, so that
every ray's path through the field lies in the grid (217 mm at n = 64). The leg runs on
above and below; what lies outside the grid in z is seen by a few rays only, at the top
and bottom rows, and the least-squares fit spreads it over the grid's end slices.

Which steps project (`Consistency`): every `every`-th predictor step counted back from
the last (so the last step, whose denoised estimate is the result, always projects), from
step `start` on. Turned off (start >= N) the sampler is pc_sample's, bit for bit.
"""
import dataclasses
import math
from typing import Callable

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from score_sde_knee import methods
from score_sde_knee import model_utils
from score_sde_knee import sampling
from score_sde_knee import sde as sde_lib
from score_sde_knee import train_state as ts
from score_sde_knee.sampler_setting import SamplerSettings
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import projector
from score_sde_knee.xray import reconstruct

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Consistency:
  """The scan the views come from, the reconstruction grid and the consistency step.

  Hashable (tuples only), so a jitted sampler can take it as a static argument.
  """
  geometry: geometry_lib.ConeBeamGeometry
  angles_deg: tuple[float, ...]             # One per view, in the batch's order.
  volume_shape: tuple[int, int, int]        # (z, y, x) voxels of the reconstruction.
  spacing_mm: tuple[float, float, float]    # (z, y, x) voxel size.
  n_iters: int = 3      # CGLS iterations per consistency step (warm-started).
  every: int = 1        # Project every `every`-th predictor step, counted from the last,
  start: int = 0        # from step `start` on; start >= N: never (pc_sample's sampler).
  weight: float = 1.0   # x0 <- x0 + weight (A v - x0): 1 replaces x0 by A v.
  nonneg: bool = False  # Clip the volume at 0 after CGLS (module docstring: a heuristic).

  def __post_init__(self):
    if not isinstance(self.geometry, geometry_lib.ConeBeamGeometry):
      raise ValueError(f'Consistency.geometry must be a ConeBeamGeometry, got '
                       f'{self.geometry!r}')
    if len(self.angles_deg) < 1 or not all(math.isfinite(a) for a in self.angles_deg):
      raise ValueError(f'Consistency.angles_deg must be one finite angle per view, got '
                       f'{self.angles_deg!r}')
    if len(self.volume_shape) != 3 or min(self.volume_shape) < 1:
      raise ValueError(f'Consistency.volume_shape must be 3 positive integers (z, y, x), '
                       f'got {self.volume_shape!r}')
    if len(self.spacing_mm) != 3 or not all(s > 0 for s in self.spacing_mm):
      raise ValueError(f'Consistency.spacing_mm must be 3 positive mm (z, y, x), got '
                       f'{self.spacing_mm!r}')
    for field, lowest in (('n_iters', 1), ('every', 1), ('start', 0)):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise ValueError(f'Consistency.{field} must be an integer >= {lowest}, got '
                         f'{value!r}')
    if not 0 < self.weight <= 1:
      raise ValueError(f'Consistency.weight must be in (0, 1], got {self.weight!r}')

  @property
  def num_views(self) -> int:
    return len(self.angles_deg)

  def project(self, volume: Array) -> Array:
    """(V, rows, cols) line integrals of a (z, y, x) volume in this scan."""
    return projector.project(volume, self.spacing_mm, self.geometry,
                             np.asarray(self.angles_deg))

  def reconstruct(self, sinogram: Array, x0: Array | None = None,
                  n_iters: int | None = None, nonneg: bool | None = None) -> Array:
    """CGLS from x0 (default zeros) on (V, rows, cols), clipped at 0 if nonneg
    (default: the field's)."""
    volume, _ = reconstruct.reconstruct_cgls(
        sinogram, self.volume_shape, self.spacing_mm, self.geometry,
        np.asarray(self.angles_deg), n_iters=self.n_iters if n_iters is None else n_iters,
        x0=x0)
    return jnp.maximum(volume, 0.0) if (self.nonneg if nonneg is None else nonneg) else volume

  def projects_at(self, i: Array, n_steps: int) -> Array:
    """Whether predictor step i (of n_steps) takes the consistency step."""
    return (i >= self.start) & ((n_steps - 1 - i) % self.every == 0)


def volume_grid(geometry: geometry_lib.ConeBeamGeometry,
                n: int = 64) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
  """(volume_shape, spacing_mm): an n^3 grid over the field of view (module docstring)."""
  if isinstance(n, bool) or not isinstance(n, int) or n < 2:
    raise ValueError(f'volume_grid: n must be an integer >= 2, got {n!r}')
  width = geometry.field_of_view_mm[1]
  half_v = 0.5 * geometry.detector_rows * geometry.pixel_pitch_mm
  height = 2.0 * half_v * (geometry.source_to_isocentre_mm + 0.5 * width) / (
      geometry.source_to_detector_mm)
  return (n, n, n), (height / n, width / n, width / n)


def for_geometry(geometry: geometry_lib.ConeBeamGeometry, n: int = 64,
                 angles_deg=None, **step) -> Consistency:
  """A Consistency for the views of `geometry` (default: its orbit) on volume_grid(n);
  `step` sets n_iters, every, start, weight, nonneg."""
  angles = geometry.angles_deg() if angles_deg is None else np.asarray(angles_deg)
  shape, spacing = volume_grid(geometry, n)
  return Consistency(geometry, tuple(float(a) for a in angles), shape, spacing, **step)


def check_views(views: Array, consistency: Consistency, what: str = 'views') -> None:
  """Refuses a batch that is not one leg's views in this scan, with a message that says
  how it differs."""
  c = consistency
  shape = tuple(views.shape)
  want = (c.num_views, c.geometry.detector_rows, c.geometry.detector_cols, 1)
  if len(shape) != 4 or shape[-1] != 1:
    raise ValueError(f'multiview: {what} must be one leg\'s views (V, H, W, 1), got shape '
                     f'{shape}')
  if shape[0] != want[0]:
    raise ValueError(f'multiview: {shape[0]} {what} for a scan of {want[0]} angles: all '
                     'views of one leg, one per angle of the geometry, are needed')
  if shape[1:3] != want[1:3]:
    raise ValueError(f'multiview: {what} of {shape[1]} x {shape[2]} pixels for a '
                     f'{want[1]} x {want[2]} detector: not views of this geometry (a model '
                     'samples the resolution it was trained on)')


def projection(consistency: Consistency, n_steps: int) -> sampling.Projection:
  """The consistency step as a sampling.Projection for a loop of n_steps predictor steps;
  its state is the last reconstructed volume (the warm start of the next)."""
  c = consistency

  def step(x, denoised, volume):
    volume = c.reconstruct(denoised[..., 0], volume)
    reprojected = c.project(volume)[..., None]
    return x + c.weight * (reprojected - denoised), volume

  def apply(x, denoised, i, volume):
    # A skipped step hands x back untouched: bit for bit the sampler without the step.
    return lax.cond(c.projects_at(i, n_steps), step, lambda x, denoised, volume: (x, volume),
                    x, denoised, volume)

  return sampling.Projection(jnp.zeros(c.volume_shape, jnp.float32), apply)


def sample_leg(score_fn: sampling.ScoreFn, sde: sde_lib.VESDE, cond: Array, rng: Array,
               settings: SamplerSettings, consistency: Consistency | None, *,
               method: str = 'ctm') -> Array:
  """All views of one leg sampled together: CTM's or CSM's PC sampler on the batch, with
  the consistency step (module docstring); consistency None samples them independently
  (ctm_sample / csm_sample on the same batch, the same draws). Pure; jit it with
  settings, consistency and method static.

  Args:
    score_fn, sde, rng, settings: as sampling.ctm_sample (settings.solver must be 'pc').
    cond: (V, H, W, 1) the leg's masks, view v taken at consistency.angles_deg[v]:
      CTM's condition, CSM's SDEdit start.
    method: 'ctm' or 'csm' (methods.py).

  Returns:
    (V, H, W, 1) views in [0, 1].
  """
  kind = methods.get(method).sampling
  if kind == 'forward':
    raise ValueError(f'multiview: method {method!r} is a single forward pass with no '
                     'sampler to make consistent; use a CTM or CSM run')
  if settings.solver != 'pc':
    raise ValueError(f'multiview: the consistency step runs in the PC sampler, got '
                     f'solver {settings.solver!r} (use a pc setting or the fast preset)')
  project = None
  if consistency is not None:
    check_views(cond, consistency, 'masks')
    project = projection(consistency, settings.n_steps)
  if kind == 'sdedit':
    return sampling.csm_sample(score_fn, sde, cond, rng, settings, project=project)
  return sampling.ctm_sample(score_fn, sde, cond, rng, settings, project=project)


def leg_sampler(config, model) -> Callable[..., Array]:
  """sample_leg with `config`'s sampler, SDE and method and `model`'s score, jitted:
  (params, masks, key, consistency) -> views, consistency static (None: independent).
  Compile ahead with .lower(params, masks, key, consistency).compile() to time it apart."""
  settings, sde = SamplerSettings.from_config(config), ts.make_sde(config)
  score = model_utils.get_score_fn(model, sde, methods.get(config.method),
                                   scale_by_sigma=bool(config.model.scale_by_sigma))

  def sample(params, masks, key, consistency):
    return sample_leg(lambda x, t, c: score(params, x, t, c), sde, masks, key, settings,
                      consistency, method=config.method)
  return jax.jit(sample, static_argnums=3)


def least_squares(views: Array, consistency: Consistency,
                  n_iters: int = 30) -> tuple[Array, Array]:
  """(v, ||A v - p|| / ||p||) for p the views (V, H, W, 1) and v their own least-squares
  reconstruction on the grid (n_iters CGLS iterations from 0, never clipped)."""
  check_views(views, consistency)
  p = jnp.asarray(views, jnp.float32)[..., 0]
  volume = consistency.reconstruct(p, n_iters=n_iters, nonneg=False)
  residual = consistency.project(volume) - p
  return volume, jnp.linalg.norm(residual) / jnp.linalg.norm(p)


def consistency_error(views: Array, consistency: Consistency, n_iters: int = 30) -> Array:
  """The relative residual of least_squares: near 0 for projections of one volume on the
  grid; for the true DRRs, the floor that the coarse grid and the iteration count leave."""
  return least_squares(views, consistency, n_iters)[1]
