"""A phantom CT at a glance: slices through the joint and sum projections, as a PNG."""
import json

import numpy as np

from score_sde_knee.utils import files


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


def save_drr_comparison(path: str, phantoms: dict) -> None:
  """AP (0 deg) and lateral (90 deg) DRRs, 256 px, of each phantom.Phantom in `phantoms`
  (title -> phantom; one column each), computed with drr.scan_volume straight from them."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from score_sde_knee.xray import drr  # pylint: disable=g-import-not-at-top
  from score_sde_knee.xray import geometry  # pylint: disable=g-import-not-at-top
  n = len(phantoms)
  fig, axes = plt.subplots(2, n, figsize=(4.6 * n, 9.4), squeeze=False)
  for i, (title, ph) in enumerate(phantoms.items()):
    scan = drr.scan_volume(ph.hu, ph.spacing_mm, geometry.ConeBeamGeometry(), [0.0, 90.0])
    for j, view in enumerate(('AP, 0 deg', 'lateral, 90 deg')):
      axes[j, i].imshow(scan.image[j], cmap='gray', vmin=0, vmax=1)
      axes[j, i].set_title(f'{title}: {view}', fontsize=9)
      axes[j, i].axis('off')
  first = next(iter(phantoms.values()))
  fig.suptitle(f"Phantom seed {first.params['seed']}: DRRs, 256 x 256 px, "
               f'{first.spacing_mm[0]:g} mm voxels', fontsize=10)
  fig.tight_layout()
  with files.atomic_path(path, '.png') as tmp:
    fig.savefig(tmp, dpi=80)
  plt.close(fig)
