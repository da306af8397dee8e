"""PNG grids of radiographs and masks (data previews, training samples, Fig. 3 analogues).

    python -m score_sde_knee.visualize --config=phantom_64 --out=docs/knee_drr_phantom_64.png
"""
import argparse
import json
import os

import numpy as np

from score_sde_knee import files


def save_figure(fig, path: str, dpi: int = 100, pad: float = 1.08,
                gap: float | None = None) -> None:
  """Lays out a matplotlib figure, writes it atomically (temp file, then rename), closes it.

  gap: least space between subplots, in font sizes (tight_layout's h_pad and w_pad).
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig.tight_layout(pad=pad, h_pad=gap, w_pad=gap)
  with files.atomic_path(path, os.path.splitext(path)[1] or '.png') as tmp:
    fig.savefig(tmp, dpi=dpi)
  plt.close(fig)


def save_grid(path: str, rows: list[list[np.ndarray]], *, col_titles=None, row_titles=None,
              cell_inches: float = 1.6, dpi: int = 100) -> None:
  """Writes a grid of grayscale images in [0, 1] (each (H, W) or (H, W, 1)) as a PNG.

  Masks are shown on the same [0, 1] scale as images: contour 0.5 is grey, bone 1.0 white.
  """
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  n_rows, n_cols = len(rows), max(len(r) for r in rows)
  # Room for the tallest column title (9 pt lines): without it tight_layout takes the
  # height from the image rows, which then touch.
  title_lines = max((str(t).count('\n') + 1 for t in col_titles or ()), default=0)
  fig, axes = plt.subplots(n_rows, n_cols, squeeze=False,
                           figsize=(cell_inches * n_cols + (0.8 if row_titles else 0),
                                    cell_inches * n_rows
                                    + (0.17 * title_lines + 0.13 if title_lines else 0)))
  for i, row in enumerate(rows):
    for j in range(n_cols):
      ax = axes[i][j]
      ax.set_xticks([])
      ax.set_yticks([])
      for side in ax.spines.values():
        side.set_visible(False)
      if j < len(row) and row[j] is not None:
        ax.imshow(np.squeeze(np.asarray(row[j], np.float32)), cmap='gray', vmin=0, vmax=1,
                  interpolation='nearest')
      if i == 0 and col_titles:
        ax.set_title(col_titles[j], fontsize=9)
      if j == 0 and row_titles:
        ax.set_ylabel(row_titles[i], fontsize=8)
  save_figure(fig, path, dpi, pad=0.2, gap=0.4)


def data_preview(builder_config: str, out: str, *, data_dir: str | None = None,
                 split: str = 'test', num_patients: int = 3,
                 angles=(0.0, 90.0, 180.0)) -> str:
  """DRR / contour / contour_bone for a few patients and angles of a built knee_drr."""
  import tensorflow_datasets as tfds
  from datasets.knee_drr import knee_drr_dataset_builder  # noqa: F401  (registers knee_drr)
  builder = tfds.builder(f'knee_drr/{builder_config}', data_dir=data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'knee_drr/{builder_config} is not built in {builder.data_dir}: run '
        f'`python -m datasets.knee_drr.build {builder_config}` first.')
  wanted = {float(a) for a in angles}
  found: dict[str, dict[float, dict]] = {}
  for ex in tfds.as_numpy(builder.as_dataset(split=split)):
    pid, ang = ex['patient_id'].decode(), float(ex['angle_deg'])
    if ang in wanted and (pid in found or len(found) < num_patients):
      found.setdefault(pid, {})[ang] = ex
  rows, titles = [], []
  for pid in sorted(found):
    for ang in sorted(found[pid]):
      ex = found[pid][ang]
      rows.append([ex['image'], ex['contour'], ex['contour_bone']])
      titles.append(f'{pid}\n{ang:.0f} deg')
  if not rows:
    raise ValueError(f'no views at angles {sorted(wanted)} in knee_drr/{builder_config}:{split}')
  save_grid(out, rows, col_titles=['DRR', 'contour', 'contour + bone'], row_titles=titles)
  return out


def save_phantom_png(path: str, phantom) -> None:
  """A phantom.Phantom at a glance: three slices through the joint and two sum projections."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  hu = phantom.hu
  sz, sy, sx = phantom.spacing_mm
  nz, ny, nx = hu.shape
  ez, ey, ex = nz * sz / 2, ny * sy / 2, nx * sx / 2
  p = phantom.params
  oz, oy, ox = p['offset_mm']
  cut = dict(z=oz + p['patella_z'] - p['patella_h'] / 4, y=oy - 10 * p['scale'],
             x=ox + 10 * p['scale'])
  iz, iy, ix = (int(np.clip((cut[a] + e) / h - 0.5, 0, n - 1))
                for a, e, h, n in (('z', ez, sz, nz), ('y', ey, sy, ny), ('x', ex, sx, nx)))
  mu = np.maximum(hu, -1000) + 1000
  views = [(hu[:, :, ix], (-ey, ey, -ez, ez), f'sagittal x={cut["x"]:.0f} (+y anterior)'),
           (hu[:, iy, :], (-ex, ex, -ez, ez), f'coronal y={cut["y"]:.0f} (+x lateral)'),
           (hu[iz], (-ex, ex, -ey, ey), f'axial z={cut["z"]:.0f} (+y anterior)'),
           (mu.sum(axis=1), (-ex, ex, -ez, ez), 'AP sum projection'),
           (mu.sum(axis=2), (-ey, ey, -ez, ez), 'lateral sum projection')]
  fig, axes = plt.subplots(1, 5, figsize=(20, 4.6))
  for ax, (img, ext, title) in zip(axes, views):
    kw = dict(vmin=-300, vmax=1500) if 'sum' not in title else {}
    ax.imshow(img, origin='lower', extent=ext, cmap='gray', **kw)
    ax.set_title(title, fontsize=9)
  fig.suptitle(json.dumps({k: phantom.params[k] for k in
                           ('seed', 'sex', 'scale', 'flexion_deg', 'varus_valgus_deg')},
                          default=lambda v: round(v, 2)), fontsize=9)
  with files.atomic_path(path, '.png') as tmp:
    fig.savefig(tmp, dpi=80)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description='PNG grid of DRR / contour / contour_bone.')
  p.add_argument('--config', default='phantom_64', help='knee_drr builder config')
  p.add_argument('--data_dir', default=None)
  p.add_argument('--split', default='test')
  p.add_argument('--patients', type=int, default=3)
  p.add_argument('--angles', default='0,90,180', help='comma-separated degrees')
  p.add_argument('--out', default=None)
  a = p.parse_args(argv)
  out = a.out or os.path.join('docs', f'knee_drr_{a.config}.png')
  data_preview(a.config, out, data_dir=a.data_dir, split=a.split, num_patients=a.patients,
               angles=tuple(float(x) for x in a.angles.split(',')))
  print(out)


if __name__ == '__main__':
  from score_sde_knee import progress  # pylint: disable=g-import-not-at-top
  progress.quiet_library_info()  # as main.py: library noise would bury the output
  main()
