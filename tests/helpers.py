"""What several test files share: a tiny knee_drr config, an exact Gaussian score and a
trained-looking workdir."""
import json
import os

import jax.numpy as jnp

from datasets.knee_drr import knee_drr_dataset_builder as kb
from score_sde_knee import checkpointing
from score_sde_knee import model_utils
from score_sde_knee import parallel
from score_sde_knee import train_state as ts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def read(*parts: str) -> str:
  """A file of the repository, by its path parts."""
  with open(os.path.join(ROOT, *parts), encoding='utf-8') as f:
    return f.read()


def table_rows(text: str, header_start: str) -> dict[str, list[str]]:
  """First cell -> other cells, for each row of the one Markdown table whose header starts
  so; cells lose their bold marks (RESULTS.md bolds some)."""
  lines = text.splitlines()
  starts = [i for i, line in enumerate(lines) if line.startswith(header_start)]
  assert len(starts) == 1, f'{len(starts)} tables start with {header_start!r}'
  rows = {}
  for line in lines[starts[0] + 2:]:
    if not line.startswith('|'):
      break
    cells = [c.strip().strip('*').strip() for c in line.strip().strip('|').split('|')]
    rows[cells[0]] = cells[1:]
  return rows


def mean_std(cell: str) -> tuple[float, float]:
  """'29.188 ± 2.22' (or '28.34 ± 0.36 over runs') -> (29.188, 2.22)."""
  mean, std = cell.split('±')
  return float(mean), float(std.split()[0])


def load_result(name: str) -> dict:
  """A JSON file of benchmarks/results/."""
  return json.loads(read('benchmarks', 'results', name))


def rounded(x: float, like: str) -> float:
  """x rounded to as many decimals as the quoted cell `like` shows."""
  return round(float(x), len(like.split('.')[1]) if '.' in like else 0)


# 3 phantom patients (split 1:1:1) x 6 views at 16x16 from 8 mm voxels: built in seconds.
TINY = kb.KneeDrrConfig(name='tiny', num_patients=3, detector=16, num_views=6,
                        spacing_mm=8.0)


def gaussian_score(m, s, sde):
  """The exact VE-perturbed score of data N(m, s^2 I): -(x - m) / (s^2 + sigma(t)^2)."""
  m = jnp.asarray(m, jnp.float32)

  def score_fn(x, t, cond):
    del cond
    sigma = sde.sigma(t).reshape((-1,) + (1,) * (x.ndim - 1))
    return -(x - m) / (s**2 + sigma**2)
  return score_fn


def make_workdir(path, config, ema_fn=None, step: int = 2) -> str:
  """A workdir as training leaves it: config.json and a checkpoint of step `step`."""
  state = ts.init_train_state(config, model_utils.create_model(config), parallel.make_mesh())
  if ema_fn is not None:
    state = state.replace(ema_params=ema_fn(state.ema_params))
  checkpointing.check_and_save_config(config, str(path))
  ckpt = checkpointing.Checkpoints(str(path), config)
  ckpt.maybe_save(step, state)
  ckpt.close()
  return str(path)
