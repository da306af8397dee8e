"""CTM: the segmentation concatenated to the noisy image as input channels (paper Alg. 2).

    python main.py --mode=train --config=configs/ctm.py:contour_bone,cpu --workdir=runs/ctm_cb

Sampling starts from N(0, sigma_max^2 I) and follows the conditional score s(x, y, t).
"""
from configs import default


def get_config(arg: str | None = None):
  return default.get_config(arg, method='ctm')
