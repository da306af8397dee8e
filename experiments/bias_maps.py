"""Where a sampler's draws share an error: per image, one draw beside the mean over seeds
of (draw - truth), for several `experiments.posterior_mean` files of one condition (one
run's settings, or several runs on the same eval subset).

    python -m experiments.bias_maps runs/pm/posterior_csm_contour_bone_pc-500.json \
        runs/pm/posterior_csm_contour_bone_pc-17-...json --labels "N = 500" fast \
        --out docs/csm_bias_maps.png

The mean error of K draws keeps what the seeds share (bias) and averages away what they do
not (spread, whose variance shrinks as 1/K): red where the draws are brighter than the
radiograph, blue where darker. posterior_mean records it per mask region as numbers
(`mean_error_by_region`); this script draws it, and measures it against the distance to
the leg's edge (`error_by_distance`, and out_profile.png: is a bias spread over the leg,
or at the skin line?). It reads the draws posterior_mean cached in the run's workdir (the
JSON's `draw_dirs`; files from before that field are located from their workdir,
condition, setting, split and checkpoint). The draws must be the ones the file measured:
the script recomputes the region errors and stops if they differ. Writes the PNGs (with
--images 0 only the profile) and prints, per file, the setting, seeds and both error
breakdowns as JSON.
"""
import argparse
import json
import os
import sys
import textwrap

import numpy as np
from scipy import ndimage

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import posterior_mean  # pylint: disable=g-import-not-at-top
from score_sde_knee.utils import files
from score_sde_knee import input_pipeline
from score_sde_knee.utils import progress
from score_sde_knee import report
from score_sde_knee import run_config
from score_sde_knee.utils import plots
from score_sde_knee.utils import xla_cpu


# Signed distance to the leg's edge, in pixels (negative: air outside the leg): the skin
# line, one and three pixels either side of it, and the inside of the leg.
DISTANCE_BANDS = (-np.inf, -3.5, -1.5, 0.0, 1.5, 3.5, 6.5, np.inf)
PROFILE_PX = (-8, 16)  # plot_profile's range of distances


def draw_dirs(result: dict) -> list[str]:
  """The seed folders of a posterior_mean result (its `draw_dirs`, or, in older files,
  found from its workdir, condition, setting, split and checkpoint step)."""
  if result.get('draw_dirs'):
    return result['draw_dirs']
  split = result.get('split', 'test')
  other = split if split != run_config.load(result['workdir']).eval.split else None
  tried = []
  # The newest checkpoint's folder, or a --step run's (step_<S>).
  for step in (None, result['checkpoint_step']):
    dirs = [posterior_mean.draw_dir(result['workdir'], result['condition'],
                                    result['setting'], s, step, other)
            for s in result['seeds']]
    tried.append(dirs[0])
    if all(_checkpoint_step(d) == result['checkpoint_step'] for d in dirs):
      return dirs
  raise FileNotFoundError(
      f'No cached draws of {result["setting"]!r} (checkpoint {result["checkpoint_step"]}, '
      f'seeds {result["seeds"]}) in {" or ".join(tried)}: rerun experiments.posterior_mean '
      'with the same --workdir, --condition, --setting, --k and --first_seed (it resumes).')


def _checkpoint_step(d: str) -> int | None:
  try:
    with open(os.path.join(d, 'metrics.json'), encoding='utf-8') as f:
      return json.load(f)['checkpoint_step']
  except FileNotFoundError:
    return None


def load(path: str) -> dict:
  """A posterior_mean JSON file with its draws (K, n, H, W, 1) and the subset's images,
  condition masks and contour+bone masks (n, H, W, 1)."""
  with open(path, encoding='utf-8') as f:
    result = json.load(f)
  draws = []
  for d in draw_dirs(result):
    by_index = report.load_samples(os.path.join(d, 'samples.npz'))
    draws.append(np.stack([by_index[i] for i in sorted(by_index)]).astype(np.float64))
  config = run_config.load(result['workdir'])
  data = input_pipeline.load_split(config, result.get('split', 'test'),
                                   int(config.eval.num_images))
  images = data['image'].astype(np.float64)
  draws = np.stack(draws)
  if draws.shape[1:] != images.shape:
    raise ValueError(f'{path}: the cached draws are {draws.shape[1:]}, the eval subset '
                     f'{images.shape}: the run\'s config.eval changed since.')
  regions = posterior_mean.error_by_region(draws, images, data['contour_bone'])
  recorded = result.get('mean_error_by_region')
  if recorded and any(recorded[k] is not None
                      and (regions[k] is None or abs(regions[k] - recorded[k]) > 1e-6)
                      for k in regions):
    raise ValueError(f'{path}: the cached draws give region errors {regions}, the file '
                     f'records {recorded}: they are not the draws it measured.')
  return {'path': path, 'setting': result['setting'], 'nfe': result.get('nfe'),
          'seeds': result['seeds'], 'condition': result['condition'],
          'method': result['method'], 'draws': draws, 'images': images,
          'mask': data[result['condition']], 'contour_bone': data['contour_bone'],
          'error_by_region': regions,
          'error_by_distance': error_by_distance(draws, images, data['contour_bone'])}


def mean_error(draws: np.ndarray, images: np.ndarray) -> np.ndarray:
  """(K, n, H, W, 1) draws, (n, H, W, 1) truth -> (n, H, W): the error the draws share."""
  return (draws - images[None]).mean(axis=0)[..., 0]


def signed_distance(leg: np.ndarray) -> np.ndarray:
  """(n, H, W) bool leg masks -> (n, H, W) distance in pixels to the leg's edge: positive
  inside (to the nearest pixel outside), negative outside (to the nearest leg pixel)."""
  inside = np.stack([ndimage.distance_transform_edt(m) for m in leg])
  outside = np.stack([ndimage.distance_transform_edt(~m) for m in leg])
  return np.where(leg, inside, -outside)


def error_by_distance(draws: np.ndarray, images: np.ndarray, contour_bone: np.ndarray,
                      edges=DISTANCE_BANDS) -> list[dict]:
  """The draws' error by signed distance to the leg's edge (bands (lo, hi] between
  consecutive `edges`), bone pixels left out: is a bias spread over the soft tissue, or at
  the skin line? draws (K, n, H, W, 1); images and contour_bone (n, H, W, 1).

  Each band: pixels; error, the mean over draws of (draw - truth); mse, a single draw's
  mean squared error; sq_error_share, the band's share of all of a single draw's squared
  error (over every pixel, bone included); truth, the mean truth. None for a band without
  pixels.
  """
  cb = contour_bone[..., 0]
  d = signed_distance(cb >= posterior_mean.REGIONS['soft_tissue'][0])
  keep = cb < posterior_mean.REGIONS['bone'][0]
  diff = (draws - images[None])[..., 0]
  err, sq = diff.mean(axis=0), (diff**2).mean(axis=0)
  total = sq.sum()
  truth = images[..., 0]
  rows = []
  for lo, hi in zip(edges[:-1], edges[1:]):
    m = keep & (d > lo) & (d <= hi)
    some = bool(m.any())
    rows.append({'band_px': [float(lo) if np.isfinite(lo) else None,  # JSON has no inf
                             float(hi) if np.isfinite(hi) else None],
                 'pixels': int(m.sum()),
                 'error': float(err[m].mean()) if some else None,
                 'mse': float(sq[m].mean()) if some else None,
                 'sq_error_share': float(sq[m].sum() / total) if some and total > 0 else None,
                 'truth': float(truth[m].mean()) if some else None})
  return rows


def _signed(x: float | None) -> str:
  return 'n/a' if x is None else f'{x:+.3f}'  # None: a region without pixels


def plot(entries: list[dict], labels: list[str], indices: list[int], path: str,
         limit: float | None = None):
  """Rows: the images `indices`; columns: condition, truth, then per entry its first seed's
  draw and its mean error on a red-blue scale of +-limit (default: the 99th percentile of
  |error| over the shown maps). Returns the (closed) figure."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  errors = [mean_error(e['draws'], e['images'])[indices] for e in entries]
  if limit is None:
    limit = float(np.percentile(np.abs(np.stack(errors)), 99)) or 1.0
  first = entries[0]
  n_cols = 2 + 2 * len(entries)
  fig, axes = plt.subplots(len(indices), n_cols, squeeze=False,
                           figsize=(1.5 * n_cols + 0.9, 1.5 * len(indices) + 0.6),
                           layout='constrained')
  titles = [f"condition\n({first['condition']})", 'radiograph\n(truth)']
  for label, e in zip(labels, entries):
    r = e['error_by_region']
    titles += ['\n'.join(textwrap.wrap(label, 22)) + f"\none draw (seed {e['seeds'][0]})",
               f"mean error of {len(e['seeds'])} draws\nsoft tissue {_signed(r['soft_tissue'])},"
               f" bone {_signed(r['bone'])}"]
  for i, idx in enumerate(indices):
    cells = [(first['mask'][idx], 'gray'), (first['images'][idx], 'gray')]
    for e, err in zip(entries, errors):
      cells += [(e['draws'][0, idx], 'gray'), (err[i], 'RdBu_r')]
    for j, (img, cmap) in enumerate(cells):
      ax = axes[i][j]
      ax.set_xticks([])
      ax.set_yticks([])
      lo, hi = (-limit, limit) if cmap == 'RdBu_r' else (0.0, 1.0)
      im = ax.imshow(np.squeeze(img), cmap=cmap, vmin=lo, vmax=hi, interpolation='nearest')
      if cmap == 'RdBu_r':
        err_im = im
      if i == 0:
        ax.set_title(titles[j], fontsize=7)
    axes[i][0].set_ylabel(f'image {idx}', fontsize=8)
  # One bar for all error maps; constrained layout makes room for it (tight_layout cannot).
  fig.colorbar(err_im, ax=axes, shrink=0.5, pad=0.01).set_label('draw - truth', fontsize=7)
  with files.atomic_path(path, '.png') as tmp:
    fig.savefig(tmp, dpi=120)
  plt.close(fig)
  return fig


def plot_profile(entries: list[dict], labels: list[str], path: str):
  """The draws' shared error against signed distance to the leg's edge, one line per entry
  (bone pixels left out; 1 px bins). Returns the (closed) figure."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5.6, 3.4))
  edges = np.arange(PROFILE_PX[0], PROFILE_PX[1] + 1) - 0.5
  centres = edges[:-1] + 0.5
  for label, e in zip(labels, entries):
    rows = error_by_distance(e['draws'], e['images'], e['contour_bone'], tuple(edges))
    ax.plot(centres, [np.nan if r['error'] is None else r['error'] for r in rows], 'o-',
            ms=3, label=f"{label} ({len(e['seeds'])} draws)")
  ax.axhline(0.0, color='0.5', lw=0.8)
  ax.axvline(0.0, color='0.5', lw=0.8, ls=':')
  ax.set_xlabel('distance to the leg\'s edge (px): < 0 air, > 0 leg (bone left out)')
  ax.set_ylabel('mean over draws of draw - truth')
  e0 = entries[0]
  methods = ' / '.join(dict.fromkeys(e['method'].upper() for e in entries))
  ax.set_title(f"{methods} · {e0['condition']}, {len(e0['images'])} images", fontsize=9)
  ax.legend(fontsize=7)
  plots.save_figure(fig, path, dpi=120)
  return fig


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('files', nargs='+', metavar='JSON',
                 help="experiments.posterior_mean's JSON files of one run and condition")
  p.add_argument('--labels', nargs='+', default=None,
                 help='a column title per file (default: its setting)')
  p.add_argument('--images', type=int, default=3,
                 help='rows: evenly spaced subset images (0: only the profile plot)')
  p.add_argument('--limit', type=float, default=None,
                 help='the error scale, +-limit (default: 99th percentile of |error| shown)')
  p.add_argument('--out', default='runs/bias_maps.png')
  a = p.parse_args(argv)
  if a.labels is not None and len(a.labels) != len(a.files):
    p.error(f'--labels: {len(a.labels)} given for {len(a.files)} files')
  if a.images < 0:
    p.error(f'--images must be >= 0, got {a.images}')
  if a.limit is not None and not a.limit > 0:
    p.error(f'--limit must be > 0, got {a.limit}')
  entries = []
  for i, path in enumerate(a.files):
    print(f'[{i + 1}/{len(a.files)}] {path}', file=sys.stderr, flush=True)
    entries.append(load(path))
  for e in entries[1:]:
    if (e['condition'], e['images'].shape) != (entries[0]['condition'],
                                                entries[0]['images'].shape):
      p.error(f"{e['path']} is {e['condition']} on {len(e['images'])} images, "
              f"{entries[0]['path']} {entries[0]['condition']} on "
              f"{len(entries[0]['images'])}: give files of one run and condition")
  indices = report.evenly_spaced(list(range(len(entries[0]['images']))), a.images)
  labels = a.labels or [e['setting'] for e in entries]
  written = []
  if indices:
    plot(entries, labels, indices, a.out, a.limit)
    written.append(a.out)
  written.append(os.path.splitext(a.out)[0] + '_profile.png')
  plot_profile(entries, labels, written[-1])
  print(json.dumps({'out': written, 'images': indices,
                    'files': [{k: e[k] for k in ('path', 'setting', 'nfe', 'seeds',
                                                 'error_by_region', 'error_by_distance')}
                              for e in entries]}, indent=1))


if __name__ == '__main__':
  xla_cpu.configure()  # what main.py runs; before JAX starts
  progress.quiet_library_info()
  main()
