"""Writes dummy_data/: three tiny phantom CTs (8 mm voxels, int16 NIfTI) used as the
manual_dir of the builder test. Run from the repository root:

    python -m datasets.knee_drr.make_dummy_data
"""
import argparse
import os

import numpy as np
import SimpleITK as sitk

from score_sde_knee.xray import phantom

OUT = os.path.join(os.path.dirname(__file__), 'dummy_data')


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', default=OUT, help='folder for case000..002.nii.gz')
  out = p.parse_args().out
  os.makedirs(out, exist_ok=True)
  for seed in range(3):
    p = phantom.make_phantom(100 + seed, spacing_mm=8.0)
    img = sitk.GetImageFromArray(np.round(p.hu).astype(np.int16))
    img.SetSpacing(tuple(reversed(p.spacing_mm)))  # SimpleITK wants (x, y, z)
    sitk.WriteImage(img, os.path.join(out, f'case{seed:03d}.nii.gz'))


if __name__ == '__main__':
  main()
