"""The CTM contour runs' plot: its numbers agree with RESULTS.md, nothing is clipped."""
import os
import shutil

import numpy as np
import pytest

from experiments import plot_ctm_contour_runs as plot_runs
from helpers import mean_std, read, table_rows

RESULTS_MD = read('benchmarks', 'RESULTS.md')


def test_collected_numbers_match_the_figures_quoted_in_results_md():
  series = plot_runs.collect()
  rows = table_rows(RESULTS_MD, '| contour only, knee_drr 1.0.0, 30 test images |')
  unet = np.asarray(series['unet_psnr'])
  assert len(unet) == 3  # the U-Net runs with a result file, no figure typed in
  assert mean_std(rows['U-Net, three runs: mean ± std over runs'][0]) == (
      round(unet.mean(), 2), round(unet.std(ddof=1), 2))
  assert sorted(series['runs']) == [43, 44]  # found from the training-curve files
  for seed, step in ((43, 8000), (44, 8000), (44, 16000)):
    draws = series['runs'][seed]['pc500_draws'][step]
    cell = rows[f'CTM seed {seed}, step {step}, PC N = 500, four draws: mean ± std over draws']
    assert len(draws) == 4
    assert mean_std(cell[0]) == (round(np.mean(draws), 2), round(np.std(draws, ddof=1), 2))
  assert sorted(series['runs'][44]['pc500_draws']) == [8000, 16000]
  steps = [s for s, _, _ in series['runs'][44]['ancestral']]
  assert steps == list(range(2000, 16001, 2000))
  assert [s for s, _, _ in series['runs'][43]['ancestral']] == [2000, 4000, 6000, 8000]
  # Only the pc:25 ancestral setting: the ancestral50/100 files (other NFE) are left out.
  assert all(single < avg for _, single, avg in series['runs'][43]['ancestral'])
  # Single --mode=eval draws where no four-draw file exists: seed 43's 8000 is a draw set.
  assert sorted(series['runs'][43]['pc500_single']) == [2000, 4000]
  assert sorted(series['runs'][44]['pc500_single']) == [2000]


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
  assert not legend.overlaps(ax.get_window_extent(renderer))  # it would hide the low draws
  page = fig.bbox
  for a in (ax, ax_loss):
    box = a.title.get_window_extent(renderer)
    assert page.x0 <= box.x0 and box.x1 <= page.x1, a.title.get_text()
  assert page.y0 <= legend.y0
