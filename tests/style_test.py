"""The repository's Python against the project's rules: no deprecated JAX/Flax APIs, no
name that is used but never defined (which only fails when that line runs, e.g. a script's
--help), and no line over 100 columns."""
import os
import re

from pyflakes import api as pyflakes_api
from pyflakes import messages as pyflakes_messages
from helpers import ROOT

# What each replaces it (the standards in the project's brief); assembled from parts so that
# this file does not match itself.
DEPRECATED = {
    r'\bjax\.tree_' + r'(map|leaves|flatten|unflatten|structure|reduce)\b': 'jax.tree.*',
    r'\bjax\.tree_' + r'util\.tree_\w+': 'jax.tree.*',
    r'\bflax\.' + r'optim\b': 'optax',
    r'\bdevice_put_' + r'replicated\b': 'jax.device_put with a NamedSharding',
    r'flax\.training\.' + r'checkpoints|from flax\.training import ' + r'checkpoints':
        'orbax-checkpoint',
}
FOLDERS = ('score_sde_knee', 'benchmarks', 'configs', 'datasets', 'tests')


def _python_files():
  yield os.path.join(ROOT, 'main.py')
  for folder in FOLDERS:
    for dirpath, _, names in os.walk(os.path.join(ROOT, folder)):
      yield from (os.path.join(dirpath, n) for n in sorted(names) if n.endswith('.py'))


def _hits(text: str) -> list[str]:
  return [f'{m.group(0)} (use {use})' for pattern, use in DEPRECATED.items()
          for m in re.finditer(pattern, text)]


def test_the_patterns_find_each_deprecated_call():
  calls = ['jax.tree' '_map(f, x)', 'jax.tree_util.tree' '_flatten_with_path(t)',
           'import flax.op' 'tim', 'jax.device_put_rep' 'licated(x, d)',
           'from flax.training import check' 'points']
  assert [bool(_hits(c)) for c in calls] == [True] * len(calls)
  assert not _hits('jax.tree.map(f, x); jax.tree.flatten_with_path(t); import optax')


def test_no_deprecated_api_in_the_repository():
  files = list(_python_files())
  assert len(files) > 50
  found = {}
  for path in files:
    with open(path, encoding='utf-8') as f:
      hits = _hits(f.read())
    if hits:
      found[os.path.relpath(path, ROOT)] = hits
  assert not found


# The pyflakes findings that are certain errors at run time; unused imports and the like are
# left to taste.
UNDEFINED = (pyflakes_messages.UndefinedName, pyflakes_messages.UndefinedLocal,
             pyflakes_messages.UndefinedExport)


class _Collect:
  """A pyflakes reporter that keeps undefined-name messages and syntax errors as text."""

  def __init__(self):
    self.found = []

  def flake(self, message):
    if isinstance(message, UNDEFINED):
      self.found.append(str(message))

  def syntaxError(self, filename, msg, lineno, offset, text):  # pylint: disable=invalid-name
    self.found.append(f'{filename}:{lineno}: syntax error: {msg}')

  def unexpectedError(self, filename, msg):  # pylint: disable=invalid-name
    self.found.append(f'{filename}: {msg}')


def _undefined(text: str, name: str) -> list[str]:
  reporter = _Collect()
  pyflakes_api.check(text, name, reporter)
  return reporter.found


def test_the_check_finds_an_undefined_name():
  assert _undefined('def f():\n  return OPTIONS\n', 'a.py') == [
      "a.py:2:10: undefined name 'OPTIONS'"]
  assert _undefined('def f(:\n', 'b.py')[0].startswith('b.py:1: syntax error')
  assert not _undefined('import os\nOPTIONS = 1\ndef f():\n  return OPTIONS\n', 'c.py')


def _over_repository(check) -> list[str]:
  """check(text, relative path) -> findings, over every Python file of the repository."""
  found = []
  for path in _python_files():
    with open(path, encoding='utf-8') as f:
      found += check(f.read(), os.path.relpath(path, ROOT))
  return found


def test_no_undefined_names_in_the_repository():
  assert not _over_repository(_undefined)


MAX_COLUMNS = 100


def _long_lines(text: str, name: str) -> list[str]:
  return [f'{name}:{i}: {len(line)} columns' for i, line in enumerate(text.splitlines(), 1)
          if len(line) > MAX_COLUMNS]


def test_the_check_finds_a_long_line():
  assert _long_lines('x = 1\n' + 'y' * 101 + '\n' + 'z' * 100, 'a.py') == [
      'a.py:2: 101 columns']


def test_no_line_over_100_columns():
  assert not _over_repository(_long_lines)
