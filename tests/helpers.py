"""What several test files share: a tiny knee_drr config, an exact Gaussian score and a
trained-looking workdir."""
import os

import jax.numpy as jnp

from datasets.knee_drr import knee_drr_dataset_builder as kb
from score_sde_knee import checkpointing
from score_sde_knee import model_utils
from score_sde_knee import parallel
from score_sde_knee import train_state as ts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository

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
