"""Atomic file writes: a reader never sees a truncated file that looks complete."""
import contextlib
import json
import os
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ''):
  """Yields a temporary path next to `path`; renames it onto `path` only on success.

  The temp name keeps the real extension (`suffix`) so writers that infer the format from
  the name (SimpleITK, PIL) still work.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.tmp-' + os.path.basename(path) + '-',
                             suffix=suffix, dir=directory)
  os.close(fd)
  # mkstemp creates 0600 files; give the result the permissions a plain open() would.
  umask = os.umask(0)
  os.umask(umask)
  try:
    yield tmp
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    if isinstance(e, OSError):  # e.g. a full disk: say which file, and that nothing changed
      raise OSError(e.errno, f'Cannot write {path} ({e.strerror or e}); any earlier '
                    f'{os.path.basename(path)} is unchanged. Free space or pass another '
                    '--workdir / --out.') from e
    raise


def read_json(path: str):
  """The JSON value in `path`; a file that does not parse is named in the error."""
  with open(path, encoding='utf-8') as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: not valid JSON ({e}); expected a file this project wrote. '
                       'Remove it to have it written again.') from e


def write_json(path: str, obj) -> None:
  with atomic_path(path, '.json') as tmp, open(tmp, 'w', encoding='utf-8') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write('\n')


def write_npz(path: str, **arrays) -> None:
  with atomic_path(path, '.npz') as tmp:
    np.savez(tmp, **arrays)


def write_npy(path: str, array) -> None:
  with atomic_path(path, '.npy') as tmp:
    np.save(tmp, array)
