"""The CTM contour runs' plot: its numbers agree with RESULTS.md, nothing is clipped."""
import os
import re
import shutil

import numpy as np
import pytest

from benchmarks import plot_ctm_contour_runs as plot_runs

RESULTS_MD = os.path.join(os.path.dirname(plot_runs.RESULTS), 'RESULTS.md')


def test_collected_numbers_match_the_figures_quoted_in_results_md():
  series = plot_runs.collect()
  with open(RESULTS_MD, encoding='utf-8') as f:
    text = f.read()
  # The U-Net band: "U-Net, four runs: mean ± std over runs** | **30.54 ± 0.36**".
  m = re.search(r'U-Net, four runs: mean ± std over runs\*\* \| \*\*([\d.]+) ± ([\d.]+)', text)
  unet = np.asarray(series['unet_psnr'])
  assert m and len(unet) == 4
  assert (round(unet.mean(), 2), round(unet.std(ddof=1), 2)) == (float(m[1]), float(m[2]))
  # Session 16's table row: "four draws (seeds 44-47): mean ± std | 29.26 ± 0.48 | 29.27 ± 0.29".
  m = re.search(r'four draws \(seeds 44-47\): mean ± std \| ([\d.]+) ± ([\d.]+) \| '
                r'([\d.]+) ± ([\d.]+)', text)
  draws = series['runs'][44]['pc500_draws']
  assert m and sorted(draws) == [8000, 16000]
  for step, (mean, std) in zip((8000, 16000), ((m[1], m[2]), (m[3], m[4]))):
    assert len(draws[step]) == 4
    assert round(np.mean(draws[step]), 2) == float(mean)
    assert round(np.std(draws[step], ddof=1), 2) == float(std)
  steps = [s for s, _, _ in series['runs'][44]['ancestral']]
  assert steps == list(range(2000, 16001, 2000))
  assert [s for s, _, _ in series['runs'][43]['ancestral']] == [2000, 4000, 6000, 8000]
  # Only the pc:25 ancestral setting: the ancestral50/100 files (other NFE) are left out.
  assert all(single < avg for _, single, avg in series['runs'][43]['ancestral'])


def test_missing_result_file_is_named(tmp_path):
  shutil.copytree(plot_runs.RESULTS, tmp_path / 'r')
  os.remove(tmp_path / 'r' / 'eval_unet_contour_seed45_cpu.json')
  with pytest.raises(FileNotFoundError, match='eval_unet_contour_seed45_cpu.json'):
    plot_runs.collect(str(tmp_path / 'r'))


def test_legend_and_titles_stay_clear_of_the_data(tmp_path):
  fig = plot_runs.plot(plot_runs.collect(), str(tmp_path / 'p.png'))
  assert (tmp_path / 'p.png').stat().st_size > 10_000
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  canvas = FigureCanvasAgg(fig)  # save_figure closed the figure's own canvas
  canvas.draw()
  renderer = canvas.get_renderer()
  ax, ax_loss = fig.axes
  legend = ax.get_legend().get_window_extent(renderer)
  assert not legend.overlaps(ax.get_window_extent(renderer))  # session 16's figure did
  page = fig.bbox
  for a in (ax, ax_loss):
    box = a.title.get_window_extent(renderer)
    assert page.x0 <= box.x0 and box.x1 <= page.x1, a.title.get_text()
  assert page.y0 <= legend.y0
