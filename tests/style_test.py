"""The repository against the project's rules: no deprecated JAX/Flax APIs, no name that is
used but never defined (which only fails when that line runs, e.g. a script's --help), no
line over 100 columns, and no text or file name that narrates how the project was built."""
import os
import re
import subprocess

import pytest
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
FOLDERS = ('score_sde_knee', 'benchmarks', 'experiments', 'configs', 'datasets', 'tests')


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


# Words that tell how the work on the project was organised instead of describing the
# project: numbered work periods, loans of machines, issue numbers, whether work was merged.
# A reader cannot know what they referred to; name versions, dates, commands and machines.
# Assembled from parts so that this file does not match itself.
HISTORY_TEXT = re.compile('|'.join((
    r'\bsess' + r'ions?\s+\d',  # a numbered work period, or a range of them
    r'\ble' + r'ases?\b',  # a machine lent for a while
    r'\biss' + r'ues?\s+#?\d',  # an issue number
    r'\blan' + r'ded\b',  # "not merged"
    r'\bwork' + r'place\b',
    r'\bruns/s' + r'\d+/',  # a work folder named after a work period
)), re.IGNORECASE)
# In file names also a work period's short form, as in name_s12_cpu.json.
HISTORY_NAME = re.compile(HISTORY_TEXT.pattern + r'|_s' + r'\d+[_.]|sess' + r'ion|\ble' + r'ase',
                          re.IGNORECASE)


def _history(text: str) -> list[str]:
  return [m.group(0) for m in HISTORY_TEXT.finditer(text)]


def test_the_history_patterns_catch_examples_and_pass_clean_text():
  narrated = ['as measured in Sess' 'ion 26 (2026-12-04)', 'sess' 'ions 4-18',
              'the first le' 'ase', 'leas' 'es of machines', 'iss' 'ue 5 item 3', 'not lan' 'ded',
              'the work' 'place notes', 'workdir runs/s' '22/csm']
  assert [bool(_history(s)) for s in narrated] == [True] * len(narrated)
  clean = ('a pytest fixture with scope="session"', 'release notes', 'please rerun',
           'a test session of pytest', 'the 1.1.0 release', 's1=(pa, pb)', 'runs/table/csm',
           'an issue with the data', 'no leash')
  assert [s for s in clean if _history(s)] == []
  names = ['bias_maps_s' '23_csm_cpu.json', 'drr_s' '26.json', 'notes_sess' 'ion.md',
           'le' 'ase_notes.md']
  assert [bool(HISTORY_NAME.search(n)) for n in names] == [True] * len(names)
  assert not any(HISTORY_NAME.search(n) for n in (
      'posterior_v1.1.0_xeon_csm_contour_cpu.json', 'ctm_contour_seed44_16000_cpu.json',
      'sampler_setting.py', 'release.md'))


def _tracked_files() -> list[str]:
  try:
    out = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True,
                         check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    pytest.skip('not a git checkout')
  return [p for p in out.decode().split('\0') if p and os.path.isfile(os.path.join(ROOT, p))]


def test_no_tracked_text_or_file_name_narrates_the_work():
  paths = _tracked_files()
  assert len(paths) > 100
  found = [f'file name: {p}' for p in paths if HISTORY_NAME.search(os.path.basename(p))]
  for p in paths:
    with open(os.path.join(ROOT, p), 'rb') as f:
      data = f.read()
    if b'\0' in data:
      continue  # binary
    try:
      text = data.decode('utf-8')
    except UnicodeDecodeError:
      continue
    for i, line in enumerate(text.splitlines(), 1):
      if hits := _history(line):
        found.append(f'{p}:{i}: {", ".join(hits)}')
  assert not found, '\n'.join(found)
