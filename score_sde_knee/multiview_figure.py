"""The figure of one leg sampled view by view and jointly (multiview_run.py): a few views of
each set side by side (independent | consistent | truth), then three orthogonal mid slices
of the volume reconstructed from each set."""
import numpy as np

from score_sde_knee.utils import plots


def view_columns(num_views: int, shown: int = 6) -> list[int]:
  """Indices of `shown` views spread evenly over the orbit (all of them if fewer)."""
  if num_views <= shown:
    return list(range(num_views))
  return [int(i) for i in np.floor(np.arange(shown) * num_views / shown)]


def mid_slices(volume: np.ndarray) -> list[np.ndarray]:
  """(axial, coronal, sagittal) mid slices of a (z, y, x) volume (axis 0 inferior ->
  superior, ct_io's frame); the coronal and sagittal ones with superior at the top."""
  nz, ny, nx = volume.shape
  return [volume[nz // 2], volume[::-1, ny // 2, :], volume[::-1, :, nx // 2]]


def display_range(volumes: list[np.ndarray]) -> tuple[float, float]:
  """One grey scale for all volumes, so that they compare: 0 to the 99.5th percentile of
  their voxels (the least-squares volumes have a few large values at the grid's ends)."""
  top = max(float(np.percentile(v, 99.5)) for v in volumes)
  return 0.0, top if top > 0 else 1.0


def save(path: str, views: dict[str, np.ndarray], angles_deg, volumes: dict[str, np.ndarray],
         spacing_mm=(1.0, 1.0, 1.0), title: str = '') -> None:
  """Writes the figure: views {set: (V, H, W, 1) in [0, 1]}, volumes {set: (z, y, x)} of
  voxels spacing_mm (z, y, x), drawn to scale."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = list(views)
  first = next(iter(views.values()))
  cols = view_columns(first.shape[0])
  n_cols = max(len(cols), 3)
  n_rows = len(names) + len(volumes)
  fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.7 * n_cols, 1.8 * n_rows),
                           squeeze=False)
  for ax in axes.ravel():
    ax.axis('off')
  for r, name in enumerate(names):
    for j, v in enumerate(cols):
      axes[r, j].imshow(views[name][v, ..., 0], cmap='gray', vmin=0.0, vmax=1.0)
      axes[r, j].set_title(f'{name} {float(angles_deg[v]):g} deg', fontsize=7)
  low, high = display_range(list(volumes.values()))
  sz, sy, sx = (float(s) for s in spacing_mm)
  aspects = (sy / sx, sz / sx, sz / sy)  # rows' mm over columns' mm, per plane
  for r, (name, volume) in enumerate(volumes.items(), start=len(names)):
    for j, (plane, image) in enumerate(zip(('axial', 'coronal', 'sagittal'),
                                           mid_slices(np.asarray(volume)))):
      axes[r, j].imshow(image, cmap='gray', vmin=low, vmax=high, aspect=aspects[j])
      axes[r, j].set_title(f'{name} volume, {plane}', fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  plots.save_figure(fig, path, dpi=100)
