"""What several test files share: a tiny knee_drr config, an exact Gaussian score, the
sampler tests' float64 reference and a trained-looking workdir."""
import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from datasets.knee_drr import knee_drr_dataset_builder as kb
from score_sde_knee import checkpointing
from score_sde_knee import model_utils
from score_sde_knee import parallel
from score_sde_knee import sde as sde_lib
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


def read_split(data_dir: str, split: str = 'test', name: str = TINY.name) -> list[dict]:
  """The examples of knee_drr/<name>'s split in file order, as dicts of numpy arrays, read
  with random access (tfds.data_source: what the Grain pipeline reads)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  source = tfds.builder(f'knee_drr/{name}', data_dir=data_dir).as_data_source(split)
  return [source[i] for i in range(len(source))]


def tiny_config(method: str, condition: str = 'contour', data_dir: str = ''):
  """The method's `test` config (configs/<method>.py) on the TINY data in data_dir."""
  c = importlib.import_module(f'configs.{method}').get_config(f'{condition},test')
  c.data.data_dir, c.data.builder_config = data_dir, TINY.name
  return c


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


# The sampler tests' SDE, and the standard errors they allow around a float64 prediction.
SDE = sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0, num_scales=500)
Z_TOL = 5.0


def means(shape) -> np.ndarray:
  """Per-pixel data means 0.35-0.65 for the sampler tests."""
  return np.linspace(0.35, 0.65, int(np.prod(shape)), dtype=np.float32).reshape(shape)


def reference_pc(x0, m, s, sde, rng, n_steps, snr, n_corrector, order, per_sample,
                 known=None):
  """score_sde_knee.sampling.pc_sample on the score of data N(m, s^2 I), from t = 1, in
  float64 numpy with the sampler's documented noise (sampling.py, "Randomness").

  known: (mask, values), reset as sampling_variants.py's "Known pixels" says."""
  ts = np.linspace(1.0, 1e-5, n_steps)
  sig = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** ts
  sig_next = np.append(sig[1:], 0.0)
  x = np.asarray(x0, np.float64)
  norm = lambda a: np.sqrt(np.sum(a.reshape(a.shape[0], -1) ** 2, axis=1))

  def reset(x, sigma, key):
    if known is None:
      return x
    z = np.asarray(jax.random.normal(key, x.shape), np.float64)
    return np.where(known[0], known[1] + sigma * z, x)

  x = reset(x, sig[0], jax.random.fold_in(rng, n_steps + 1))
  for i in range(n_steps):
    key_p, key_c = jax.random.split(jax.random.fold_in(rng, i))
    key_kc, key_kp = jax.random.split(jax.random.fold_in(rng, n_steps + 2 + i))
    score = lambda x: -(x - m) / (s**2 + sig[i] ** 2)
    n_c = 0 if (order == 'predictor_first' and i == 0) else n_corrector
    for j in range(n_c):
      z = np.asarray(jax.random.normal(jax.random.fold_in(key_c, j), x.shape), np.float64)
      g = score(x)
      if per_sample:
        e = 2 * (snr * norm(z) / norm(g)) ** 2
      else:
        e = np.full(x.shape[0], 2 * (snr * norm(z).mean() / norm(g).mean()) ** 2)
      e = e.reshape(-1, 1, 1, 1)
      x = x + e * g + np.sqrt(2 * e) * z
    if snr and n_corrector:
      x = reset(x, sig[i], key_kc)
    var = sig[i] ** 2 - sig_next[i] ** 2
    x_mean = x + var * score(x)
    z = np.asarray(jax.random.normal(key_p, x.shape), np.float64)
    x = reset(x_mean + np.sqrt(var) * z, sig_next[i], key_kp)
  return x_mean if known is None else np.where(known[0], known[1], x_mean)
