"""Another project opens a built knee_drr without this repository's code."""
import os
import subprocess
import sys
import textwrap

import pytest

from datasets.knee_drr import knee_drr_dataset_builder as kb
from helpers import TINY


@pytest.mark.parametrize('file_format', ['tfrecord', 'array_record'])
def test_open_from_outside_the_repo(tmp_path, file_format):
  data_dir = tmp_path / 'tfds'
  builder = kb.Builder(config=TINY, data_dir=str(data_dir), file_format=file_format)
  builder.download_and_prepare()
  script = textwrap.dedent(f'''
      import sys
      import numpy as np
      import tensorflow_datasets as tfds
      d = tfds.builder_from_directory({builder.data_dir!r})
      n = d.info.splits['test'].num_examples
      if {file_format!r} == 'array_record':  # random access (grain); no tf.data reader
        src = tfds.data_source('knee_drr/{TINY.name}', split='test',
                               data_dir={str(data_dir)!r})
        assert len(src) == n == 6, len(src)
        ex = src[5]
      else:
        ex = next(iter(tfds.as_numpy(d.as_dataset(split='train'))))
      assert ex['image'].shape == (16, 16, 1), ex['image'].shape
      assert set(np.unique(ex['contour_bone'])) <= {{0.0, 0.5, 1.0}}
      bad = [m for m in sys.modules if m.startswith(('score_sde_knee', 'datasets.knee_drr'))]
      assert not bad, bad
      print('OK', n)
  ''')
  outside = tmp_path / 'elsewhere'
  outside.mkdir()
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  r = subprocess.run([sys.executable, '-c', script], cwd=outside, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0 and 'OK 6' in r.stdout, r.stderr[-3000:]
