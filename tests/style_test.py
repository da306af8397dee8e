"""The repository's Python against the project's rules: no deprecated JAX/Flax APIs."""
import os
import re

from readme_test import ROOT

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
