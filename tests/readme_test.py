"""README.md against what it points at: its links, its Table I summary and CI's command."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts: str) -> str:
  with open(os.path.join(ROOT, *parts), encoding='utf-8') as f:
    return f.read()


def _table_rows(text: str, header_start: str) -> dict[str, list[str]]:
  """The rows (first cell -> other cells) of the Markdown table whose header starts so."""
  lines = text.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
  rows = {}
  for line in lines[start + 2:]:
    if not line.startswith('|'):
      break
    cells = [c.strip() for c in line.strip('|').split('|')]
    rows[cells[0]] = cells[1:]
  return rows


def test_relative_links_and_images_exist():
  text = _read('README.md')
  targets = re.findall(r'\]\(([^)\s]+)\)', text)
  local = [t.split('#')[0] for t in targets if not re.match(r'[a-z]+://', t)]
  assert len(local) >= 5  # the pictures and RESULTS/NOTES links: the regex finds them
  missing = [t for t in local if t and not os.path.exists(os.path.join(ROOT, t))]
  assert not missing


def test_table_one_summary_matches_results():
  """The README's short Table I repeats RESULTS.md's PSNR cells and the paper's figures."""
  readme = _table_rows(_read('README.md'), '| method | contour | contour+bone | paper')
  results = _table_rows(_read('benchmarks', 'RESULTS.md'),
                        '| method | contour MAE | contour PSNR (dB) |')
  assert set(readme) == {'U-Net', 'CSM', 'CTM'}

  def number(cell: str) -> tuple[float, float]:  # '29.188 ± 2.22' -> (29.188, 2.22)
    mean, std = cell.split('±')
    return float(mean), float(std)

  for method, (c, cb, paper_c, paper_cb) in readme.items():
    ours, paper = results[method], results[f'{method} (paper)']
    # RESULTS columns: contour MAE, contour PSNR, contour+bone MAE, contour+bone PSNR, n.
    assert number(c) == number(ours[1]) and number(cb) == number(ours[3]), method
    # The README rounds the paper's 3-decimal means to 2.
    for short, full in ((paper_c, paper[1]), (paper_cb, paper[3])):
      assert number(short) == pytest.approx(number(full), abs=0.005), method


def test_ci_runs_the_readme_test_command():
  readme = _read('README.md')
  blocks = re.findall(r'```bash\n(.*?)\n```', readme, re.S)
  test_commands = [b for b in blocks if 'pytest' in b]
  assert len(test_commands) == 1
  ci_lines = [line for line in _read('.ci', 'run').splitlines()
              if line and not line.startswith('#')]
  assert test_commands[0] in ci_lines
