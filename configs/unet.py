"""U-Net baseline: NCSN++ without noise conditioning, segmentation in, radiograph out, L1 loss.

    python main.py --mode=train --config=configs/unet.py:contour_bone,cpu --workdir=runs/unet_cb
"""
from configs import default


def get_config(arg: str | None = None):
  c = default.get_config(arg, method='unet')
  c.model.scale_by_sigma = False
  return c
