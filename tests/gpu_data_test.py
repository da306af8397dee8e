"""benchmarks/gpu_data.py: the short run's phantoms in memory, the knee_drr data set built when
absent and read as training reads it, and a data build's error reaching the caller."""
import numpy as np
import pytest

from benchmarks import gpu_data
from benchmarks import gpu_figures
from datasets.knee_drr import build
from datasets.knee_drr import knee_drr_dataset_builder as kb
from helpers import TINY
from helpers import read_split

VERSION = str(kb.Builder.VERSION)  # The version the fixture builds.


def test_phantom_views_are_normalised_drrs_with_three_level_masks():
  data = gpu_data.phantom_views(2, 16, views=6)
  assert data['image'].shape == data['cond'].shape == (12, 16, 16, 1)
  assert data['image'].min() >= 0.0 and data['image'].max() == pytest.approx(1.0)
  assert set(np.unique(data['cond'])) <= {0.0, 0.5, 1.0}
  assert (data['cond'] == 1.0).any() and (data['cond'] == 0.0).any()
  # Two patients, not one patient twice.
  assert not np.allclose(data['image'][:6], data['image'][6:])


def test_memory_data_holds_out_the_last_phantoms_views_as_the_leg():
  config = gpu_figures.config_for('test', 4)
  size = config.data.image_size
  data = gpu_data.memory_data(config, 3, 2, views=6)
  views = gpu_data.phantom_views(3, size, views=6)
  assert data.leg['patient'] == 'phantom 2'
  np.testing.assert_array_equal(data.leg['image'], views['image'][12:])
  np.testing.assert_array_equal(data.leg['cond'], views['cond'][12:])
  np.testing.assert_allclose(data.leg['angles_deg'], [0, 60, 120, 180, 240, 300])
  train = {x.tobytes() for x in views['image'][:12]}
  assert all(x.tobytes() in train for x in next(data.train)['image'])


def test_a_failed_data_build_reaches_the_caller():
  # short_run builds the data in another thread while the programs compile: the build's
  # error must still reach the part (and so the JSON), not vanish with the thread.
  def broken():
    raise FileNotFoundError('no phantoms here')
  with pytest.raises(FileNotFoundError, match='no phantoms here'):
    gpu_data.beside(broken)()
  assert gpu_data.beside(lambda: 7)() == 7


def test_knee_drr_data_builds_an_absent_data_set_then_reads_the_splits(tmp_path, data_dir,
                                                                        monkeypatch):
  calls = []

  def fake_build(spec, where):  # knee_drr/tiny is no named config: build.build cannot
    calls.append((spec, where))  # make it, so the fixture's builder does.
    kb.Builder(config=TINY, data_dir=where).download_and_prepare()
  monkeypatch.setattr(build, 'build', fake_build)
  config = gpu_figures.config_for('test', 4)
  d = config.data
  d.data_dir, d.builder_config, d.version = str(tmp_path / 'tfds'), TINY.name, VERSION
  data = gpu_data.knee_drr_data(config, 3)
  assert calls == [(f'{TINY.name}:{VERSION}', d.data_dir)]
  assert data.info['built'] and data.info['build_s'] > 0
  # The grid: three test views evenly spaced over the split, images and masks as stored.
  test = read_split(d.data_dir, 'test')
  assert data.info['num_test_examples'] == len(test) == 6
  for j, i in enumerate([0, 2, 5]):  # round(linspace(0, 5, 3))
    np.testing.assert_array_equal(data.held_out['image'][j], test[i]['image'])
    np.testing.assert_array_equal(data.held_out['cond'][j], test[i]['contour_bone'])
  # The leg: every view of the first test patient (by name), sorted by angle.
  pid = lambda ex: ex['patient_id'].decode() if isinstance(ex['patient_id'], bytes) else str(
      ex['patient_id'])
  first = sorted({pid(ex) for ex in test})[0]
  mine = sorted((ex for ex in test if pid(ex) == first), key=lambda ex: float(ex['angle_deg']))
  assert data.leg['patient'] == first and len(data.leg['image']) == len(mine) > 1
  np.testing.assert_allclose(data.leg['angles_deg'], [float(ex['angle_deg']) for ex in mine])
  for j, ex in enumerate(mine):
    np.testing.assert_array_equal(data.leg['image'][j], ex['image'])
    np.testing.assert_array_equal(data.leg['cond'][j], ex['contour_bone'])
  # Training batches come from the train split alone, with the contour+bone masks.
  train = {ex['image'].tobytes(): ex['contour_bone'] for ex in read_split(d.data_dir, 'train')}
  batch = next(data.train)
  assert batch['image'].shape == batch['cond'].shape == (4, 16, 16, 1)
  for image, cond in zip(batch['image'], batch['cond']):
    np.testing.assert_array_equal(cond, train[image.tobytes()])
  # Found the second time: not built again.
  assert not gpu_data.knee_drr_data(config, 3).info['built'] and len(calls) == 2
