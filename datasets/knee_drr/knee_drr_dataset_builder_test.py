"""knee_drr builder tests: TFDS's own checks on dummy data, plus determinism and splits."""
import json

import numpy as np
import tensorflow_datasets as tfds

from datasets.knee_drr import knee_drr_dataset_builder as kb

# Tiny versions of the shipped configs: same code paths, a fraction of the work.
TINY_PHANTOM = kb.KneeDrrConfig(name='tiny_phantom', num_patients=3, detector=16,
                                num_views=6, spacing_mm=8.0)
TINY_CT = kb.KneeDrrConfig(name='tiny_ct', source='ct', detector=16, num_views=6,
                           spacing_mm=8.0)


class KneeDrrTest(tfds.testing.DatasetBuilderTestCase):
  """3 patients (phantoms, or the 3 CTs in dummy_data/) x 6 views, split 1:1:1."""
  DATASET_CLASS = kb.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = [TINY_PHANTOM, TINY_CT]
  SPLITS = {'train': 6, 'validation': 6, 'test': 6}
  MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False  # SimpleITK and numpy read real files.

  def _make_builder(self, config=None):
    # TFDS's checks read the data with tf.data (as_dataset), which reads tfrecord only;
    # the ArrayRecord default is read through data_source in the tests below.
    return self.dataset_class(data_dir=self.tmp_dir, config=config, version=self.VERSION,
                              file_format='tfrecord')


def test_split_by_patient_is_disjoint_and_9_1_1():
  ids = [f'p{i:02d}' for i in range(55)]
  s = kb.split_patients(ids, seed=0)
  assert [len(s[k]) for k in ('train', 'validation', 'test')] == [45, 5, 5]
  assert set(s['train']) | set(s['validation']) | set(s['test']) == set(ids)
  assert not set(s['train']) & set(s['test']) and not set(s['validation']) & set(s['test'])
  assert s == kb.split_patients(list(ids), seed=0)  # deterministic
  assert s != kb.split_patients(ids, seed=1)


def test_split_by_image_covers_all_views_once():
  s = kb.split_images(['a', 'b', 'c'], num_views=11, seed=0)
  pairs = s['train'] + s['validation'] + s['test']
  assert sorted(pairs) == [(p, v) for p in 'abc' for v in range(11)]
  assert (len(s['validation']), len(s['test'])) == (3, 3)


def test_too_few_patients_is_a_clear_error():
  import pytest
  with pytest.raises(ValueError, match='>= 3 patients'):
    kb.split_patients(['a', 'b'], seed=0)


def test_build_is_deterministic_and_resumes_from_its_cache(tmp_path):
  def build(root):
    b = kb.Builder(config=TINY_PHANTOM, data_dir=str(root))
    b.download_and_prepare()
    source = b.as_data_source(split='test')
    return [source[i] for i in range(len(source))]
  a = build(tmp_path / 'a')
  # A second data dir whose cache already holds one patient (an interrupted build).
  cache = next((tmp_path / 'a' / 'knee_drr_cache').iterdir())
  done = sorted(cache.iterdir())[0]
  target = tmp_path / 'b' / 'knee_drr_cache' / cache.name
  target.mkdir(parents=True)
  (target / done.name).write_bytes(done.read_bytes())
  b = build(tmp_path / 'b')
  assert len(a) == len(b) == 6
  for x, y in zip(a, b):
    assert x['patient_id'] == y['patient_id'] and x['angle_deg'] == y['angle_deg']
    np.testing.assert_array_equal(x['image'], y['image'])
  assert {float(e['angle_deg']) for e in a} == {0.0, 60.0, 120.0, 180.0, 240.0, 300.0}
  for e in a:
    assert set(np.unique(e['contour_bone'])) <= {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(e['contour'], np.where(e['image'] > 0.1, 0.5, 0.0))


def test_each_version_rebuilds_with_its_phantom_revision(tmp_path):
  from score_sde_knee.xray import phantom
  cfg = kb.KneeDrrConfig(name='rev_probe', num_patients=3, detector=16, num_views=6,
                         spacing_mm=4.0)
  versions = [str(v) for v in [kb.Builder.VERSION] + kb.Builder.SUPPORTED_VERSIONS]
  assert sorted(kb.Builder.PHANTOM_REVISION) == sorted(versions)
  assert kb.Builder.PHANTOM_REVISION[str(kb.Builder.VERSION)] == phantom.REVISION
  assert max(kb.Builder.PHANTOM_REVISION.values()) == max(phantom.REVISIONS)
  from configs import default  # new runs train on the default version
  assert default.get_config('cpu').data.version == str(kb.Builder.VERSION)
  volumes, caches = {}, set()
  for v in versions:
    b = kb.Builder(config=cfg, data_dir=str(tmp_path), version=v)
    assert str(b.version) == v
    hu, spacing = b._volume(1)  # pylint: disable=protected-access
    ref = phantom.make_phantom(1, spacing_mm=4.0, revision=kb.Builder.PHANTOM_REVISION[v])
    np.testing.assert_array_equal(hu, ref.hu)
    volumes[v] = hu
    caches.add(b._cache_dir())  # pylint: disable=protected-access
  assert len(caches) == len(versions)  # a version never reuses another's cached scans
  assert not np.array_equal(volumes['1.0.0'], volumes['1.1.0'])
  assert not np.array_equal(volumes['1.1.0'], volumes['2.0.0'])


def test_ct_of_two_legs_gives_two_patients_in_one_split(tmp_path):
  import os
  import shutil
  from score_sde_knee.xray import ct_io
  manual = tmp_path / 'manual'
  manual.mkdir()
  dummy = os.path.join(os.path.dirname(kb.__file__), 'dummy_data')
  for name in ('case000.nii.gz', 'case001.nii.gz'):  # one leg each
    shutil.copy(os.path.join(dummy, name), manual / name)
  # Both legs (soft tissue, bone inside) on a 6 mm plate, 4 mm voxels, 160 mm long.
  y, x = np.meshgrid(*[(np.arange(48) - 23.5) * 4.0] * 2, indexing='ij')
  sl = np.where((y < -44) & (y > -50), 300.0, -1000.0)
  for cx in (-45.0, 50.0):
    sl[np.hypot(x - cx, y) <= 40] = 40.0
    sl[np.hypot(x - cx, y) <= 12] = 800.0
  ct_io.write_ct(str(manual / 'both.nii.gz'), np.repeat(sl[None], 40, 0), (4.0, 4.0, 4.0))
  b = kb.Builder(config=TINY_CT, data_dir=str(tmp_path / 'data'), version='2.0.0')
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  split_of = {}
  for split in ('train', 'validation', 'test'):
    source = b.as_data_source(split=split)
    for ex in (source[i] for i in range(len(source))):
      split_of.setdefault(ex['patient_id'].decode(), set()).add(split)
  assert sorted(split_of) == ['both_left', 'both_right', 'case000', 'case001']
  assert all(len(s) == 1 for s in split_of.values())
  assert split_of['both_left'] == split_of['both_right']
  legs_json = next((tmp_path / 'data' / 'knee_drr_cache').iterdir()) / 'both.legs.json'
  notes = json.loads(legs_json.read_text())['notes']
  assert any(n.startswith('table removed') for n in notes['both_left'])
  assert 'left leg of a two-leg volume' in notes['both_left']
