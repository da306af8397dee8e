import errno
import json
import os

import numpy as np
import pytest

from score_sde_knee.utils import files


def test_write_json_and_npz_roundtrip(tmp_path):
  files.write_json(tmp_path / 'a.json', {'x': 1})
  assert json.loads((tmp_path / 'a.json').read_text()) == {'x': 1}
  files.write_npz(tmp_path / 'b.npz', y=np.arange(3))
  with np.load(tmp_path / 'b.npz') as z:
    np.testing.assert_array_equal(z['y'], np.arange(3))
  assert sorted(os.listdir(tmp_path)) == ['a.json', 'b.npz']  # no temp files left


def test_read_json_reads_what_was_written_and_names_a_broken_file(tmp_path):
  files.write_json(tmp_path / 'a.json', {'x': [1, 2.5], 'y': None})
  assert files.read_json(str(tmp_path / 'a.json')) == {'x': [1, 2.5], 'y': None}
  (tmp_path / 'cut.json').write_text('{"x": [1,')
  with pytest.raises(ValueError, match=r'cut\.json: not valid JSON'):
    files.read_json(str(tmp_path / 'cut.json'))


def test_failed_write_keeps_the_old_file(tmp_path):
  path = tmp_path / 'm.json'
  files.write_json(path, {'old': True})
  with pytest.raises(TypeError):
    files.write_json(path, {'bad': object()})  # not JSON-serialisable, fails mid-write
  assert json.loads(path.read_text()) == {'old': True}
  assert os.listdir(tmp_path) == ['m.json']


def test_full_disk_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
  path = tmp_path / 'batch.npz'
  files.write_npz(path, x=np.arange(4))

  def half_written_then_full(file, **arrays):  # what a full disk does to np.savez
    with open(file, 'wb') as f:
      f.write(b'PK\x03\x04 truncated')
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(np, 'savez', half_written_then_full)
  with pytest.raises(OSError, match=f'Cannot write {path} \\(No space left on device\\); '
                     'any earlier batch.npz is unchanged') as err:
    files.write_npz(path, x=np.zeros(4))
  assert err.value.errno == errno.ENOSPC
  monkeypatch.undo()
  with np.load(path) as z:
    np.testing.assert_array_equal(z['x'], np.arange(4))
  assert os.listdir(tmp_path) == ['batch.npz']  # the half-written temp file is gone
