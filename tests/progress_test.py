import io

from score_sde_knee import progress


def test_format_seconds():
  assert progress.format_seconds(5) == '5s'
  assert progress.format_seconds(125) == '2m05s'
  assert progress.format_seconds(3725) == '1h02m05s'


def test_eta_counts_only_this_runs_work(monkeypatch):
  clock = iter([0.0, 10.0, 10.0])
  monkeypatch.setattr(progress.time, 'monotonic', lambda: next(clock))
  out = io.StringIO()
  bar = progress.Progress(100, 'eval', done=50, unit='batch', every=0, stream=out)
  bar.update(10)  # 10 new batches in 10 s -> 1 batch/s, 40 left -> ETA 40 s
  line = out.getvalue().strip()
  assert line.startswith('eval: 60/100 (60%)'), line
  assert 'ETA 40s' in line and '1.00 batch/s' in line
