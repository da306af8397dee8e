"""The segmentation benchmark's two figures, from what its stages left in the workdir.

save_figure: the share of the bone-Dice gap each regime closes (or, without a ceiling, test
Dice by regime) and seed 0's labels of a few test views.
save_samples_figure: what each generator drew for the same masks, beside the radiograph of
that mask which the benchmark never used, and for masks deformed from the k patients' own.
"""
import os
import re
from typing import Any, Sequence

import numpy as np

from benchmarks import augmentation_data as ad
from score_sde_knee import segmenter_data as sd
from score_sde_knee.utils import plots

GENERATORS = (('ctm', 'CTM'), ('unet', 'U-Net'), ('csm', 'CSM'))
SAMPLE_ROWS = 3  # masks per k
GAP_FLOOR = -0.5  # bars below are cut there and labelled with their value
COLORS = {'classic': 'tab:gray', 'ctm': 'tab:blue', 'unet': 'tab:orange', 'csm': 'tab:green'}


def gap_bars(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The gap panel's bars: per regime with a gap_closed, its bone Dice, its height (cut at
  GAP_FLOOR), the seeds' std as a share of its gap, the value written below a cut bar (''
  if none), and its look: colour by generator, hatched for deformed own masks, a grey edge
  with classic augmentation."""
  by_name = {r['name']: r for r in rows}
  out = []
  for r in rows:
    if r.get('gap_closed') is None:
      continue
    gap = by_name['ceiling']['dice_bone_mean'] - by_name[f"real-{r['k']}"]['dice_bone_mean']
    cut = r['gap_closed'] < GAP_FLOOR
    out.append({'name': r['name'], 'dice': r['dice_bone_mean'],
                'height': max(r['gap_closed'], GAP_FLOOR),
                'err': 0.0 if cut else r['dice_bone_std'] / gap,
                'label': f"{r['gap_closed']:.2f}" if cut else '',
                'color': COLORS['classic' if r['generator'] == 'none' else r['generator']],
                'hatch': '//' if r['mask_source'] == 'deformed' else '',
                'edge': COLORS['classic'] if r['augment'] and r['generator'] != 'none'
                        else 'white'})
  return out


def _gap_panel(ax, bars: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
  x = np.arange(len(bars))
  ax.bar(x, [b['height'] for b in bars], 0.7, yerr=[b['err'] for b in bars], capsize=3,
         color=[b['color'] for b in bars], hatch=[b['hatch'] for b in bars],
         edgecolor=[b['edge'] for b in bars], linewidth=2)
  for xi, b in zip(x, bars):  # each bar's bone Dice above it: the figure reads as Dice too
    ax.annotate(f"{b['dice']:.4f}", (xi, max(b['height'], 0) + b['err']), xytext=(0, 2),
                textcoords='offset points', ha='center', va='bottom', fontsize=6)
    if b['label']:
      ax.annotate(f"{b['label']} ↓", (xi, GAP_FLOOR), xytext=(0, 3), textcoords='offset points',
                  ha='center', fontsize=7, color='white', weight='bold')
  ax.axhline(0, color='black', lw=0.8)
  ax.axhline(1, color='black', lw=0.8, ls='--')
  dice = {r['name']: r['dice_bone_mean'] for r in rows}
  ax.text(-0.5, 1, f"all patients: bone Dice {dice['ceiling']:.4f}", va='bottom', ha='left',
          fontsize=7)
  alone = ', '.join(f'{n} {d:.4f}' for n, d in dice.items() if re.fullmatch(r'real-\d+', n))
  ax.text(-0.5, 0, f'k patients alone: {alone}', va='top', ha='left', fontsize=7)
  ax.set_ylim(GAP_FLOOR, max(1.15, max(b['height'] + b['err'] for b in bars) + 0.15))
  ax.set_xlim(-0.6, len(bars) - 0.4)
  ax.set_xticks(x, [b['name'] for b in bars], rotation=30, ha='right', fontsize=8)
  ax.set_ylabel('share of the bone-Dice gap\nclosed (mean ± std of seeds)', fontsize=8)
  import matplotlib.patches as mpatches  # pylint: disable=g-import-not-at-top
  keys = [mpatches.Patch(color=COLORS['classic'], label='classic augmentation')] + [
      mpatches.Patch(color=COLORS[g], label=f'{n} images') for g, n in GENERATORS] + [
          mpatches.Patch(facecolor='white', edgecolor='black', hatch='//',
                         label='from deformed own masks'),
          mpatches.Patch(facecolor='white', edgecolor=COLORS['classic'], linewidth=2,
                         label='and classic augmentation')]
  ax.legend(handles=keys, fontsize=7, loc='upper left', bbox_to_anchor=(1.0, 1.0))


def save_figure(workdir: str, rows: list[dict[str, Any]], test: Any, path: str) -> None:
  """The gap closed by regime (gap_bars; without a ceiling, Dice by regime: mean and std
  over seeds), and seed 0's labels of a few test images from the predictions stage 4 kept
  (no retraining)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  preds = [np.load(os.path.join(workdir, 'seg', r['name'], 'seed0', 'predictions.npz'))
           for r in rows]
  size = preds[0]['labels'].shape[-1]
  exs = [sd.example_arrays(test[int(i)], size) for i in preds[0]['indices']]
  # One mosaic (rows: test images; columns: image, truth, each regime; labels / 2 so that
  # they look like masks), white 1 px lines between tiles.
  tile = lambda a: np.pad(np.squeeze(a), ((0, 1), (0, 1)), constant_values=1.0)
  mosaic = np.concatenate([np.concatenate([tile(ex['image']), tile(ex['labels'] / 2)] + [
      tile(p['labels'][i] / 2) for p in preds], axis=1) for i, ex in enumerate(exs)])
  cols = 2 + len(rows)
  width = max(6.0, 0.9 * cols)
  fig, (ax, bottom) = plt.subplots(2, 1, figsize=(width, 3.4 + width / cols * len(exs)),
                                   height_ratios=[3.4, width / cols * len(exs)])
  bars = gap_bars(rows) if any(r['name'] == 'ceiling' for r in rows) else []
  if bars:
    _gap_panel(ax, bars, rows)
  else:
    _dice_panel(ax, rows)
  bottom.imshow(mosaic, cmap='gray', vmin=0, vmax=1, interpolation='nearest')
  bottom.set_xticks((np.arange(cols) + 0.5) * (size + 1) - 1, ['image', 'truth'] + [
      r['name'].replace('+', '\n+', 1).replace(':', '\n') for r in rows], fontsize=7)
  bottom.xaxis.tick_top()
  bottom.set_yticks([])
  plots.save_figure(fig, path, pad=0.3)


def _dice_panel(ax, rows: list[dict[str, Any]]) -> None:
  x = np.arange(len(rows))
  for j, (m, label) in enumerate((('dice_bone', 'bone'), ('dice_leg', 'leg'))):
    ax.bar(x + (j - 0.5) * 0.38, [r[f'{m}_mean'] for r in rows], 0.38, label=label,
           yerr=[r[f'{m}_std'] for r in rows], capsize=3)
  # Zoomed so that the regimes' differences show: from a fifth of the lowest bar's distance
  # to 1 below it.
  low = min(r['dice_bone_mean'] - r['dice_bone_std'] for r in rows)
  ax.set_ylim(max(0.0, low - 0.2 * (1.0 - low)), 1)
  ax.set_xticks(x, [r['name'] for r in rows], rotation=30, ha='right', fontsize=8)
  ax.set_ylabel('test Dice')
  ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.0, 1.0))


def _load(path: str) -> np.ndarray | None:
  return np.load(path) if os.path.exists(path) else None


def samples_rows(workdir: str, ks: Sequence[int], subsets: dict[str, Any],
                 train: Any) -> tuple[list[list[np.ndarray | None]], list[str], list[str]]:
  """The samples figure's tiles (None: not drawn), column titles and row titles.

  Per k, SAMPLE_ROWS masks evenly spaced over the synthetic sets: the other patients' mask,
  its radiograph (never used by the benchmark), each generator's draw; then the deformed
  own mask of the same index and each generator's draw of it.
  """
  cols = ['mask of another\npatient', 'its radiograph\n(not used)'] + [
      n for _, n in GENERATORS] + ['deformed\nown mask'] + [n for _, n in GENERATORS]
  rows, titles = [], []
  for k in ks:
    sub = subsets['k'][str(k)]
    synth = lambda g, src: ad.synth_dir(workdir, g, k, src)
    for j in np.unique(np.linspace(0, len(sub['masks']) - 1, SAMPLE_ROWS).round().astype(int)):
      row = []
      for src in ('other_patients', 'deformed'):
        masks = [_load(os.path.join(synth(g, src), 'masks', f'm{j:05d}.npy'))
                 for g, _ in GENERATORS]
        row.append(next((m for m in masks if m is not None), None))
        if src == 'other_patients':
          size = row[0].shape[0] if row[0] is not None else None
          row.append(sd.example_arrays(train[int(sub['masks'][j])], size or 0)['image'])
        row += [_load(os.path.join(synth(g, src), 'samples', f'm{j:05d}_s0.npy'))
                for g, _ in GENERATORS]
      rows.append(row)
      titles.append(f'k = {k}, mask {j}')
  return rows, cols, titles


def save_samples_figure(workdir: str, ks: Sequence[int], subsets: dict[str, Any], train: Any,
                        path: str) -> None:
  rows, cols, titles = samples_rows(workdir, ks, subsets, train)
  plots.save_grid(path, rows, col_titles=cols, row_titles=titles, cell_inches=1.1)
