"""Fixtures shared by the test files."""
import pytest

from score_sde_knee.utils import xla_cpu

xla_cpu.configure()  # test what main.py runs (before any test starts JAX)

from datasets.knee_drr import knee_drr_dataset_builder as kb
from helpers import TINY


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A TFDS data dir holding knee_drr/tiny, built once per test process."""
  root = tmp_path_factory.mktemp('tfds')
  kb.Builder(config=TINY, data_dir=str(root)).download_and_prepare()
  return str(root)
