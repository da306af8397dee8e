"""benchmarks/input_pipeline.py: its tf.data reference (tfrecord) and Grain (ArrayRecord)
yield the same examples over an epoch, its records have their keys and positive rates, and
the report is one JSON object built from the child processes' records."""
import json
import os

import numpy as np
import pytest

from benchmarks import input_pipeline as bench
from datasets.knee_drr import build
from datasets.knee_drr import knee_drr_dataset_builder as kb
from helpers import TINY
from helpers import tiny_config

_MEASURE_KEYS = {'pipeline', 'batch_size', 'image_shape', 'batches_timed', 'start_s',
                 'batches_per_s', 'images_per_s', 'rss_before_mb', 'rss_imported_mb',
                 'max_rss_mb', 'pipeline_rss_mb'}


@pytest.fixture(scope='module')
def both_formats(tmp_path_factory):
  """knee_drr/tiny built as tfrecord, then given ArrayRecord files, as the benchmark does."""
  root = str(tmp_path_factory.mktemp('tfds_both'))
  kb.Builder(config=TINY, data_dir=root, file_format='tfrecord').download_and_prepare()
  build.convert(TINY.name, root)
  return root


def test_ensure_data_adds_array_record_to_a_tfrecord_build_then_does_nothing(tmp_path):
  # TFDS finds the unregistered TINY config only once a data set of it is on disk (it
  # caches the registered configs, so they cannot be patched per test): built as tfrecord
  # here, as ensure_data would.
  root = str(tmp_path)
  kb.Builder(config=TINY, data_dir=root, file_format='tfrecord').download_and_prepare()
  for _ in range(2):                                       # the second finds both formats
    bench.ensure_data(TINY.name, root)
    files = os.listdir(os.path.join(root, 'knee_drr', TINY.name, str(kb.Builder.VERSION)))
    for split in ('train', 'validation', 'test'):
      for fmt in ('tfrecord', 'array_record'):
        assert any(f.startswith(f'knee_drr-{split}.{fmt}-') for f in files), (split, fmt)
  assert kb.Builder(config=TINY, data_dir=root).info.file_format.value == 'array_record'


def _config(data_dir, size=TINY.detector, batch=2):
  c = tiny_config('ctm', 'contour_bone', data_dir)
  c.data.image_size, c.training.batch_size = size, batch
  return c


def _block_mean(x, size):
  f = x.shape[0] // size
  return x.astype(np.float64).reshape(size, f, size, f, -1).mean(axis=(1, 3))


def _match(got, reference, atol):
  """Index of the reference example equal to each example of got; fails if there is none."""
  out = []
  for g in got:
    err = [max(np.abs(g[k] - r[k]).max() for k in g) for r in reference]
    assert min(err) <= atol, f'an example matches none of the split (closest {min(err)})'
    out.append(int(np.argmin(err)))
  return out


@pytest.mark.parametrize('size', [TINY.detector, TINY.detector // 2])
def test_tfdata_reference_and_grain_yield_the_same_examples(both_formats, size):
  config = _config(both_formats, size)
  # Independent reference: the train split read by TFDS, block means in float64.
  source = kb.Builder(config=TINY, data_dir=both_formats).as_data_source('train')
  reference = [{'image': _block_mean(ex['image'], size),
                'cond': _block_mean(ex['contour_bone'], size)} for ex in source]
  n, b = len(reference), config.training.batch_size
  assert n == 6 and n % b == 0
  orders = {}
  for pipeline in bench.PIPELINES:
    it = bench.make_iterator(pipeline, config)
    batches = [next(it) for _ in range(n // b)]             # one epoch
    for batch in batches:
      assert sorted(batch) == ['cond', 'image']
      assert all(v.shape == (b, size, size, 1) and v.dtype == np.float32
                 for v in batch.values())
    got = [{k: batch[k][i] for k in batch} for batch in batches for i in range(b)]
    orders[pipeline] = _match(got, reference, atol=1e-6 if size < TINY.detector else 0.0)
    assert sorted(orders[pipeline]) == list(range(n))      # every example once
  assert orders['grain'] != list(range(n))                 # shuffled at all


def test_tfdata_reference_refuses_a_data_set_without_tfrecord_files(data_dir):
  with pytest.raises(FileNotFoundError, match=r'knee_drr-train\.tfrecord-\*: 0 files'):
    bench.make_iterator('tfdata', _config(data_dir))
  with pytest.raises(ValueError, match='pipeline'):
    bench.make_iterator('torch', _config(data_dir))


@pytest.mark.parametrize('pipeline', bench.PIPELINES)
def test_measure_has_its_keys_and_positive_rates(both_formats, pipeline):
  rec = bench.measure(pipeline, _config(both_formats, batch=4), batches=3)
  assert set(rec) == _MEASURE_KEYS
  assert rec['pipeline'] == pipeline and rec['batch_size'] == 4
  assert rec['image_shape'] == [TINY.detector, TINY.detector, 1]
  assert rec['batches_per_s'] > 0 and rec['start_s'] > 0
  assert rec['images_per_s'] == pytest.approx(4 * rec['batches_per_s'], rel=0.01, abs=0.05)
  assert 0 < rec['rss_before_mb'] <= rec['rss_imported_mb'] <= rec['max_rss_mb']


def test_child_prints_one_json_line_of_step_time(both_formats, monkeypatch, capsys):
  monkeypatch.setattr(bench, 'config_for', lambda *a: _config(both_formats, batch=4))
  bench.main(['--child', 'step:tfdata', '--step_batches', '2'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1
  rec = json.loads(lines[0])
  assert rec['feeder'] == 'tfdata' and rec['steps_timed'] == 2
  assert rec['step_s'] > 0 and np.isfinite(rec['loss'])


def test_report_is_one_json_object_of_medians_and_ratios(monkeypatch, capsys):
  """The parent's arithmetic on fake child records."""
  rates = {'grain': iter([10.0, 30.0, 20.0]), 'tfdata': iter([40.0, 20.0, 30.0])}
  step_s = {'none': iter([1.0, 2.0, 0.9]), 'grain': iter([1.05, 1.0, 3.0]),
            'tfdata': iter([1.5, 1.4, 1.6])}

  def fake_child(child, size, args):
    kind, name = child.split(':')
    if kind == 'step':
      return {'feeder': name, 'step_s': next(step_s[name])}
    r = next(rates[name])
    return {'pipeline': name, 'batches_per_s': r, 'images_per_s': 16 * r,
            'max_rss_mb': 100.0 + r, 'pipeline_rss_mb': r}

  built = []
  monkeypatch.setattr(bench, '_run_child', fake_child)
  monkeypatch.setattr(bench, 'ensure_data', lambda spec, data_dir: built.append(spec))
  bench.main(['--sizes', '64', '--repeats', '3', '--version', '9.9.9'])
  out = json.loads(capsys.readouterr().out)               # nothing else on stdout
  assert built == ['phantom_64:9.9.9']
  assert {'what', 'command', 'date', 'machine', 'versions'} <= set(out)
  assert set(out['versions']) == {'jax', 'grain', 'tensorflow', 'tensorflow_datasets',
                                  'array_record'}
  s = out['sizes']['64']
  assert [r['batches_per_s'] for r in s['runs']['grain']] == [10.0, 30.0, 20.0]
  assert s['medians']['grain']['batches_per_s'] == 20.0
  assert s['medians']['tfdata']['images_per_s'] == 16 * 30.0
  assert s['grain_over_tfdata_batches_per_s'] == pytest.approx(20 / 30, abs=1e-3)
  assert out['step_64']['median_step_s'] == {'none': 1.0, 'grain': 1.05, 'tfdata': 1.5}
  assert out['step_64']['fed_ratio'] == {'grain': 1.05, 'tfdata': 1.5}
  assert out['step_64']['fed'] == {'grain': True, 'tfdata': False}
