"""README.md against what it points at: its links, its Table I summary and CI's command."""
import os
import re

import pytest

from helpers import ROOT, mean_std, read, table_rows

def test_relative_links_and_images_exist():
  text = read('README.md')
  targets = re.findall(r'\]\(([^)\s]+)\)', text)
  local = [t.split('#')[0] for t in targets if not re.match(r'[a-z]+://', t)]
  assert len(local) >= 5  # the pictures and RESULTS/NOTES links: the regex finds them
  missing = [t for t in local if t and not os.path.exists(os.path.join(ROOT, t))]
  assert not missing


def test_table_one_summary_matches_results():
  """The README's short Table I repeats RESULTS.md's PSNR cells, on knee_drr 1.1.0 and 1.0.0,
  and the paper's figures."""
  readme = table_rows(read('README.md'), '| method | contour | contour+bone | 1.0.0: contour')
  results_md = read('benchmarks', 'RESULTS.md')
  new = table_rows(results_md, '| method (knee_drr 1.1.0) | contour MAE |')
  old = table_rows(results_md, '| method | contour MAE | contour PSNR (dB) |')
  assert set(readme) == {'U-Net', 'CSM', 'CTM'}

  for method, (c, cb, old_c, old_cb, paper_c, paper_cb) in readme.items():
    paper = old[f'{method} (paper)']
    # RESULTS columns: contour MAE, contour PSNR, contour+bone MAE, contour+bone PSNR, n.
    for short, full in ((c, new[method][1]), (cb, new[method][3]),
                        (old_c, old[method][1]), (old_cb, old[method][3])):
      assert short == full == '—' or mean_std(short) == mean_std(full), method
    # The README rounds the paper's 3-decimal means to 2.
    for short, full in ((paper_c, paper[1]), (paper_cb, paper[3])):
      assert mean_std(short) == pytest.approx(mean_std(full), abs=0.005), method


def test_ci_runs_the_readme_test_command():
  readme = read('README.md')
  blocks = re.findall(r'```bash\n(.*?)\n```', readme, re.S)
  test_commands = [b for b in blocks if 'pytest' in b]
  assert len(test_commands) == 1
  ci_lines = [line for line in read('.ci', 'run').splitlines()
              if line and not line.startswith('#')]
  assert test_commands[0] in ci_lines
