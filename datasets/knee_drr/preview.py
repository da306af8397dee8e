"""DRR / contour / contour_bone grid of a few patients and angles of a built knee_drr.

    python -m datasets.knee_drr.preview --config=phantom_64:2.0.0 \
        --out=docs/knee_drr_phantom_64_2.0.0.png
"""
import argparse
import os

import tensorflow_datasets as tfds

from datasets.knee_drr import knee_drr_dataset_builder  # noqa: F401  (registers knee_drr)
from score_sde_knee.utils import plots


def data_preview(builder_config: str, out: str, *, data_dir: str | None = None,
                 split: str = 'test', num_patients: int = 3,
                 angles=(0.0, 90.0, 180.0)) -> str:
  """DRR / contour / contour_bone for a few patients and angles of a built knee_drr."""
  builder = tfds.builder(f'knee_drr/{builder_config}', data_dir=data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'knee_drr/{builder_config} is not built in {builder.data_dir}: run '
        f'`python -m datasets.knee_drr.build {builder_config}` first.')
  wanted = {float(a) for a in angles}
  found: dict[str, dict[float, dict]] = {}
  source = builder.as_data_source(split=split)  # ArrayRecord (converted if built as tfrecord)
  for ex in (source[i] for i in range(len(source))):
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
  plots.save_grid(out, rows, col_titles=['DRR', 'contour', 'contour + bone'], row_titles=titles)
  return out


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
  from score_sde_knee.utils import progress  # pylint: disable=g-import-not-at-top
  progress.quiet_library_info()  # as main.py: library noise would bury the output
  main()
