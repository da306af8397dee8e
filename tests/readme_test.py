"""README.md and docs/ against what they point at: links, the Table I summary, the demo's
timing, CI's command, and the design document's section names."""
import glob
import json
import os
import re

import numpy as np
import pytest

from helpers import ROOT, mean_std, read, table_rows
from score_sde_knee import report

README = read('README.md')
MAX_README_LINES = 170
# The Markdown files whose links must resolve, each relative to its own folder.
LINKED = ('README.md', 'docs/design.md', 'docs/samplers.md', 'docs/errors.md',
          'docs/determinism.md', 'docs/geometry.md', 'datasets/knee_drr/README.md')
# Where code, tests and documents may point at a section of docs/design.md.
SOURCE_DIRS = ('score_sde_knee', 'datasets', 'benchmarks', 'experiments', 'configs', 'tests',
               'docs')


def _one_result(pattern: str) -> dict:
  paths = glob.glob(os.path.join(ROOT, 'benchmarks', 'results', pattern))
  assert len(paths) == 1, (pattern, paths)
  with open(paths[0], encoding='utf-8') as f:
    return json.load(f)


def test_readme_is_short():
  assert len(README.splitlines()) <= MAX_README_LINES


@pytest.mark.parametrize('path', LINKED)
def test_relative_links_and_images_exist(path):
  text = read(*path.split('/'))
  targets = re.findall(r'\]\(([^)\s]+)\)', text)
  local = [t.split('#')[0] for t in targets if not re.match(r'[a-z]+://', t)]
  if path == 'README.md':
    assert len(local) >= 10  # pictures, docs and RESULTS: the regex finds them
  folder = os.path.join(ROOT, os.path.dirname(path))
  missing = [t for t in local if t and not os.path.exists(os.path.join(folder, t))]
  assert not missing


def test_table_one_summary_matches_the_result_file_and_the_paper():
  """Each cell is recomputed from the per-image PSNR of the Table I result file (mean and
  population std, as evaluation reports them); the paper's cells are report.PAPER's."""
  rows = table_rows(README, '| method | contour | contour+bone | paper: contour |')
  runs = [r['metrics'] for r in _one_result('table1_v2.0.0_fast*.json')['runs']
          if 'metrics' in r]
  names = {v: k for k, v in report.NAMES.items()}
  assert set(rows) == {'U-Net', 'CSM', 'CTM'}
  assert len(runs) == 6
  for name, (c, cb, paper_c, paper_cb) in rows.items():
    method = names[name]
    for condition, cell, paper_cell in (('contour', c, paper_c),
                                        ('contour_bone', cb, paper_cb)):
      (m,) = [r for r in runs if (r['method'], r['condition']) == (method, condition)]
      assert m['data'] == 'knee_drr/phantom_64:2.0.0'
      assert m['n'] == 30 and m['checkpoint_step'] == 2000
      psnr = np.array([image['psnr'] for image in m['per_image']], np.float64)
      assert len(psnr) == 30
      assert mean_std(cell) == (round(psnr.mean(), 2), round(psnr.std(), 2)), (name, condition)
      # The README rounds the paper's 3-decimal means to 2.
      paper = mean_std(report.PAPER[(method, condition)][1])
      assert mean_std(paper_cell) == pytest.approx(paper, abs=0.005), (name, condition)


def test_demo_timing_matches_its_result_file():
  """The quick start's one timing: the demo run from a clean checkout on knee_drr 2.0.0."""
  d = _one_result('demo_clean_checkout_v2.0.0*.json')
  assert d['rc'] == 0
  assert 'AMX' in d['machine'] and '24 GiB' in d['machine']
  words = ' '.join(README.split())
  demo_min, install_min = round(d['demo_s'] / 30) / 2, round(d['install_s'] / 60)
  assert f'it took {demo_min:g} minutes, plus {install_min} to install' in words
  assert 'Intel Xeon with AMX and 24 GiB' in words


def test_ci_runs_the_readme_test_command():
  blocks = re.findall(r'```bash\n(.*?)\n```', README, re.S)
  test_commands = [b for b in blocks if 'pytest' in b]
  assert len(test_commands) == 1
  ci_lines = [line for line in read('.ci', 'run').splitlines()
              if line and not line.startswith('#')]
  assert test_commands[0] in ci_lines


def test_readme_names_samplers_by_preset_only():
  """Setting strings live in the code; README says `paper`, `fast`, `fast-air`."""
  assert not re.search(r'\b(pc|heun|dpm2):\d', README)
  for name in ('paper', 'fast', 'fast-air'):
    assert f'`{name}`' in README


def _sources():
  for top in SOURCE_DIRS:
    for folder, _, files in os.walk(os.path.join(ROOT, top)):
      for name in files:
        if name.endswith(('.py', '.md', '.sh')):
          path = os.path.join(folder, name)
          with open(path, encoding='utf-8') as f:
            yield os.path.relpath(path, ROOT), f.read()


def test_design_sections_named_elsewhere_exist():
  """Where a file names a section of docs/design.md (design.md, then the heading in double
  quotes), that heading exists; and nothing points at numbered sections of a design
  document the repository lacks."""
  headings = set(re.findall(r'^#+ (.+)$', read('docs', 'design.md'), re.M))
  numbered = re.compile('DESIGN' + r' \d')
  named = re.compile(r'design\.md,? "([^"]+)"')
  refs, stale = [], []
  for path, text in _sources():
    refs += [(path, section) for section in named.findall(text)]
    stale += [path for _ in numbered.finditer(text)]
  assert refs  # the code does point at sections: the regex finds them
  assert not [r for r in refs if r[1] not in headings]
  assert not stale
