"""Validation and training loss against steps for several runs, from their TensorBoard logs.

    python -m experiments.training_curves --workdirs runs/table/* --out curves.png

Reads every workdir's events.out.tfevents.* (a resumed run has several; a step logged twice
keeps its last value) and plots eval_loss and train_loss per run, each normalised by its
value at the first logged step so that DSM (CSM, CTM) and L1 (U-Net) runs share one axis.
Prints one JSON object {workdir: {tag: [[step, value], ...]}}.
"""
import argparse
import glob
import json
import os
import sys

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_sde_knee.utils import plots  # pylint: disable=g-import-not-at-top

TAGS = ('eval_loss', 'train_loss')


def read_scalars(workdir: str) -> dict[str, list[tuple[int, float]]]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(workdir, 'events.out.tfevents.*')))
  if not paths:
    raise FileNotFoundError(f'No events.out.tfevents.* in {workdir}: not a training run.')
  found: dict[str, dict[int, float]] = {t: {} for t in TAGS}
  for path in paths:
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for v in event.summary.value:
        if v.tag in found:
          value = (tf.make_ndarray(v.tensor) if v.HasField('tensor') else v.simple_value)
          found[v.tag][int(event.step)] = float(value)
  return {t: sorted(d.items()) for t, d in found.items()}


def plot(curves: dict[str, dict[str, list]], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(TAGS), figsize=(5 * len(TAGS), 3.6))
  for ax, tag in zip(axes, TAGS):
    for workdir, c in curves.items():
      pts = c.get(tag) or []
      if pts:
        steps, values = zip(*pts)
        ax.plot(steps, [v / values[0] for v in values], label=os.path.basename(workdir))
    ax.set_yscale('log')
    ax.set_xlabel('step')
    ax.set_ylabel(f'{tag} / first logged value')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  plots.save_figure(fig, path, dpi=110)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdirs', nargs='+', required=True)
  p.add_argument('--out', default='training_curves.png')
  a = p.parse_args()
  curves = {w.rstrip('/'): read_scalars(w) for w in a.workdirs}
  plot(curves, a.out)
  print(json.dumps(curves))


if __name__ == '__main__':
  main()
