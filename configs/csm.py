"""CSM: an unconditional score model; the segmentation enters only at sampling (SDEdit, Alg. 1).

    python main.py --mode=train --config=configs/csm.py:cpu --workdir=runs/csm

One trained model serves both conditions: sampling starts from the condition perturbed to
t0 = 0.4 and follows the unconditional score.
"""
from configs import default


def get_config(arg: str | None = None):
  return default.get_config(arg, method='csm')
