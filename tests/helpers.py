"""What several test files share: a tiny knee_drr config and an exact Gaussian score."""
import jax.numpy as jnp

from datasets.knee_drr import knee_drr_dataset_builder as kb

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
