"""The exact transpose of the cone-beam projector: A^T of `projector.project`.

Step by step the transpose of `projector._project_group`, with the same frames, grids and
float32 arithmetic for indices and weights: where the projector gathers a bilinear sample
(two weights along b, two along z) and adds it to a ray, this scatter-adds the ray's value
with the same weights back into the voxels. Skipping air layers only drops terms that are
exactly zero, so it has nothing to mirror. jax.linear_transpose of
project(skip_air=False) gives the same result (a test checks it) but about 2x slower: it
stores every layer's indices and weights on the way. Still, scatters are slower than
gathers on a CPU: this runs about 2.5x the projector's time on a volume with no air to
skip (benchmarks/reconstruct.py).
"""
from collections.abc import Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import projector


def transpose_of_project(sinogram: jax.Array, volume_shape: tuple[int, int, int],
                         spacing_mm: tuple[float, float, float],
                         geometry: geometry_lib.ConeBeamGeometry,
                         angles_deg: Sequence[float], offset_mm: tuple[float, float, float],
                         max_step_mm: float) -> jax.Array:
  """A^T y for A = projector.project with these arguments (checked by the caller:
  reconstruct.backproject is the public entry). Traceable; jit it with the scan static.

  sinogram: (len(angles_deg), rows, cols) float32. Returns (z, y, x) float32.
  """
  v, u = geometry.detector_coords_mm()
  volume = jnp.zeros(tuple(volume_shape), jnp.float32)
  for index, params, axes, da, grid in projector.view_groups(
      volume_shape, spacing_mm, offset_mm, geometry, np.asarray(angles_deg, np.float64)):
    na, nb, nz = (volume_shape[i] for i in axes)
    slab = _transpose_group(sinogram[index], jnp.asarray(params, jnp.float32),
                            jnp.asarray(grid), jnp.asarray(u, jnp.float32),
                            jnp.asarray(v, jnp.float32),
                            jnp.float32(geometry.source_to_detector_mm), shape=(na, nb, nz),
                            merge=max(1, int(max_step_mm / da + 1e-6)))
    volume = volume + jnp.transpose(slab, np.argsort(axes))
  return volume


# (cols, rows) samples, each adding 2 values to neighbours (c, k), (c, k + 1) of the lines;
# cols lines, each adding 2 rows to rows i, i + 1 of the layer.
_Z_PAIRS = lax.ScatterDimensionNumbers(update_window_dims=(2,), inserted_window_dims=(0,),
                                       scatter_dims_to_operand_dims=(0, 1))
_B_PAIRS = lax.ScatterDimensionNumbers(update_window_dims=(1, 2), inserted_window_dims=(),
                                       scatter_dims_to_operand_dims=(0,))
_IN_BOUNDS = lax.GatherScatterMode.PROMISE_IN_BOUNDS  # Indices are clipped as in project.


def _transpose_group(images, params, grid, u, v, sdd, *, shape, merge):
  """The transpose of projector._project_group: (views, rows, cols) -> (na, nb, nz).

  Per view and layer, each sample's two bilinear weights along z scatter-add the image
  into the layer's z-lines, and each line's two weights along b into the layer. Views
  run one after the other: batching them made XLA's scatters slower on a CPU.
  """
  na, nb, nz = shape
  num_layers = -(-na // merge)
  rows, cols = v.shape[0], u.shape[0]
  max_b, max_z = nb + 1.0, nz + 1.0
  grid = grid.at[0].add(0.5 * (merge - 1) * grid[1]).at[1].multiply(float(merge))
  a0, step_a, b0, step_b, z0, step_z = (grid[i] for i in range(6))
  vz = v / step_z
  z_shift = 1.0 - z0 / step_z
  column = jnp.broadcast_to(jnp.arange(cols, dtype=jnp.int32)[:, None], (cols, rows))

  def view(acc, inputs):
    p, image = inputs
    src_a, src_b, ed_a, ed_b, eu_a, eu_b = (p[i] for i in range(6))
    d_a = sdd * ed_a + u * eu_a
    d_b = sdd * ed_b + u * eu_b
    length = step_a * jnp.sqrt(d_a[:, None] ** 2 + d_b[:, None] ** 2 + v[None, :] ** 2) / (
        jnp.abs(d_a[:, None]))
    g = image.T * length  # (cols, rows): the transpose of (acc * length).T

    def layer(_, index):
      plane = a0 + step_a * index.astype(jnp.float32)
      t = (plane - src_a) / d_a
      b = (src_b + t * d_b - b0) / step_b + 1.0
      b = jnp.clip(jnp.where((t > 0) & (t <= 1), b, -1.0), 0.0, max_b)
      b_lo = jnp.minimum(jnp.floor(b), max_b - 1.0)
      w_b = (b - b_lo)[:, None]
      i = b_lo.astype(jnp.int32)
      z = jnp.clip(t[:, None] * vz[None, :] + z_shift, 0.0, max_z)
      z_lo = jnp.minimum(jnp.floor(z), max_z - 1.0)
      k = z_lo.astype(jnp.int32)
      w_z = z - z_lo
      # Each update adds a sample's two weights to two neighbours at once (windows of 2).
      lines = lax.scatter_add(
          jnp.zeros((cols, nz + 2), jnp.float32), jnp.stack([column, k], axis=-1),
          jnp.stack([g * (1.0 - w_z), g * w_z], axis=-1), _Z_PAIRS, mode=_IN_BOUNDS)
      sl = lax.scatter_add(
          jnp.zeros((nb + 2, nz + 2), jnp.float32), i[:, None],
          jnp.stack([lines * (1.0 - w_b), lines * w_b], axis=1), _B_PAIRS, mode=_IN_BOUNDS)
      return None, sl[1:-1, 1:-1]  # The zero border is padding: it has no transpose.

    _, slabs = lax.scan(layer, None, jnp.arange(num_layers, dtype=jnp.int32))
    return acc + slabs, None

  acc, _ = lax.scan(view, jnp.zeros((num_layers, nb, nz), jnp.float32), (params, images))
  # Merged layers were means of `merge` layers (zero layers padding the end).
  return jnp.repeat(acc / merge, merge, axis=0)[:na]
