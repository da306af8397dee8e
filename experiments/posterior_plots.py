"""The pictures of `python -m experiments.posterior_mean --summarize`: PSNR per setting
(mean +- s.e. over seeds) and PSNR against the spread of the draws."""
import numpy as np

from score_sde_knee import sampler_setting
from score_sde_knee.utils import plots


def plot_summary(rows: list[dict], path: str,
                 reference: tuple[str, float] | None = None):
  """Forest plot of `summarize` rows: mean +- standard error per setting, with the PC
  N = 500 row's mean +- 0.5 dB shaded (the fast-sampler goal) and `reference` (label,
  PSNR), e.g. a U-Net's figure, as a dashed line. Returns the (closed) figure."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  labels = [f"{r['setting']} ({r['nfe']} NFE, {r['seeds']} seeds)" for r in rows]
  # Width: the setting strings (~0.06 in per character at 7 pt) beside a 4 in axis;
  # height: 0.3 in per row plus 1.6 in for the two-line title and the x label.
  fig, ax = plt.subplots(figsize=(4.0 + 0.06 * max(map(len, labels)), 1.6 + 0.3 * len(rows)))
  ref = next((r for r in rows if r['setting'] == 'pc:500'), None)
  if ref is not None:
    ax.axvspan(ref['psnr_mean'] - 0.5, ref['psnr_mean'] + 0.5, color='0.9')
  y = np.arange(len(rows))
  ax.errorbar([r['psnr_mean'] for r in rows], y, xerr=[r['psnr_sem'] for r in rows],
              fmt='o', capsize=3)
  ax.set_yticks(y, labels, fontsize=7)
  ax.invert_yaxis()
  ax.set_xlabel('PSNR of one draw (dB): mean over seeds ± s.e.')
  r0 = rows[0]
  # The band and line are named in the title, not a legend: a legend beside two rows
  # covers one.
  title = [f"{r0['method'].upper()} · {r0['condition']}, {r0['n_images']} {r0['split']} "
           'images']
  if ref is not None:
    title.append('shaded: PC N = 500 mean ± 0.5 dB')
  if reference is not None:
    label, psnr = reference
    ax.axvline(psnr, color='C3', ls='--')
    title.append(f'dashed: {label} ({psnr:.2f} dB)')
  ax.set_title('\n'.join(title), fontsize=9)
  # tight_layout undercounts these long tick labels by a few characters: a wider pad.
  plots.save_figure(fig, path, dpi=120, pad=3.0)
  return fig


def plot_spread(rows: list[dict], path: str):
  """PSNR of one draw (mean +- s.e. over seeds) against the draws' spread, one panel per
  condition: a sampler that scores higher than PC N = 500 by spreading its draws less sits
  up and to the left of it. Points are numbered, the same number for the same setting in
  every panel, with the settings written out in a key below (long setting strings beside
  the points would cover each other). Rows without a spread are left out. Returns the
  (closed) figure."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = [r for r in rows if r.get('draw_variance') is not None]
  if not rows:
    raise ValueError('no row records the spread of its draws (files of k >= 2 seeds)')
  conditions = list(dict.fromkeys(r['condition'] for r in rows))
  settings = list(dict.fromkeys(r['setting'] for r in rows))
  number = {s: i + 1 for i, s in enumerate(settings)}
  nfe = {r['setting']: r['nfe'] for r in rows}
  mosaic = [conditions, ['key'] * len(conditions)]
  fig, axd = plt.subplot_mosaic(mosaic, figsize=(max(5.0 * len(conditions), 7.5),
                                                 4.2 + 0.16 * len(settings)),
                                height_ratios=[4.2, 0.16 * len(settings) + 0.2])
  for condition in conditions:
    ax = axd[condition]
    for r in rows:
      if r['condition'] != condition:
        continue
      ref = r['setting'] == 'pc:500'
      x = r['draw_variance'] * 1e4
      ax.errorbar(x, r['psnr_mean'], yerr=r['psnr_sem'], fmt='s' if ref else 'o',
                  color='C3' if ref else 'C0', capsize=3)
      ax.annotate(str(number[r['setting']]), (x, r['psnr_mean']), xytext=(5, 3),
                  textcoords='offset points', fontsize=8)
    ax.margins(x=0.12, y=0.1)
    ax.set_xlabel('spread: pixel variance across seeds (x 1e-4)')
    ax.set_ylabel('PSNR of one draw (dB), mean ± s.e.')
    ax.set_title(f"{rows[0]['method'].upper()} · {condition}, {rows[0]['n_images']} images",
                 fontsize=9)
  key = axd['key']
  key.axis('off')
  fast = sampler_setting.FAST.get(rows[0]['method'])
  key.text(0.0, 1.0, '\n'.join(f'{number[s]:>2}  {s}  ({nfe[s]} NFE)'
                                + ('  = --sampler=fast' if s == fast else '') for s in settings)
           + '\nred square: PC N = 500', va='top', ha='left', family='monospace',
           fontsize=7, transform=key.transAxes)
  plots.save_figure(fig, path, dpi=120)
  return fig
