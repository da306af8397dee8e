"""Figures written atomically, and grids of grayscale images (samples, Fig. 3 analogues)."""
import os

import numpy as np

from score_sde_knee.utils import files


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
