"""Imports flow one way: utils <- xray <- datasets, configs <- model <- benchmarks <- main.

Every import counts, also those inside functions: an import deferred into a function still
ties the two modules together, it only hides the cycle until that line runs.
"""
import ast
import os

from helpers import ROOT

PACKAGES = ('score_sde_knee', 'datasets', 'configs', 'benchmarks', 'experiments')


def layer(module: str) -> int:
  """Lower layers never import higher ones."""
  if module.startswith('score_sde_knee.utils'):
    return 0
  if module.startswith('score_sde_knee.xray'):
    return 1
  if module.startswith(('datasets', 'configs')):
    return 2
  if module.startswith('score_sde_knee'):
    return 3
  if module.startswith(('benchmarks', 'experiments')):
    return 4
  return 5  # main


def project_modules() -> dict[str, str]:
  """Module name -> path, for main.py and every module of the project's packages."""
  found = {'main': os.path.join(ROOT, 'main.py')}
  for package in PACKAGES:
    for dirpath, _, names in os.walk(os.path.join(ROOT, package)):
      for name in names:
        if name.endswith('.py') and not name.endswith('_test.py'):
          rel = os.path.relpath(os.path.join(dirpath, name[:-3]), ROOT)
          module = rel.replace(os.sep, '.').removesuffix('.__init__')
          found[module] = os.path.join(dirpath, name)
  return found


def imports_of(source: str, known: set[str]) -> set[str]:
  """The project modules a module's source imports, anywhere in it."""
  out = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in known
               else node.module for a in node.names]
    else:
      continue
    out.update(n for n in names if n in known)
  return out


def graph(sources: dict[str, str]) -> dict[str, set[str]]:
  known = set(sources)
  return {m: imports_of(src, known) - {m} for m, src in sources.items()}


def against_the_direction(g: dict[str, set[str]]) -> list[str]:
  return sorted(f'{a} -> {b}' for a, deps in g.items() for b in deps if layer(b) > layer(a))


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
  state: dict[str, int] = {}  # 1 on the current path, 2 done
  path: list[str] = []

  def visit(m):
    state[m] = 1
    path.append(m)
    for d in sorted(g.get(m, ())):
      if state.get(d) == 1:
        return path[path.index(d):] + [d]
      if d not in state and (found := visit(d)):
        return found
    state[m] = 2
    path.pop()
    return None

  for m in sorted(g):
    if m not in state and (found := visit(m)):
      return found
  return None


def _repository_graph():
  sources = {}
  for module, path in project_modules().items():
    with open(path, encoding='utf-8') as f:
      sources[module] = f.read()
  return graph(sources)


def test_the_checks_find_a_cycle_and_an_import_against_the_direction():
  g = graph({
      'score_sde_knee.xray.phantom': 'from score_sde_knee.utils import plots\n'
                                     'def f():\n  from datasets.knee_drr import builder\n',
      'score_sde_knee.utils.plots': '',
      'datasets.knee_drr.builder': 'from score_sde_knee.xray import phantom\n',
  })
  assert against_the_direction(g) == ['score_sde_knee.xray.phantom -> datasets.knee_drr.builder']
  assert find_cycle(g) == ['datasets.knee_drr.builder', 'score_sde_knee.xray.phantom',
                           'datasets.knee_drr.builder']
  g['score_sde_knee.xray.phantom'].discard('datasets.knee_drr.builder')
  assert find_cycle(g) is None and not against_the_direction(g)


def test_the_repository_has_no_cycle_and_imports_flow_one_way():
  g = _repository_graph()
  assert len(g) > 50 and sum(map(len, g.values())) > 100  # the parse found the imports
  assert 'score_sde_knee.xray.projector' in g['score_sde_knee.xray.drr']
  assert against_the_direction(g) == []
  assert find_cycle(g) is None
