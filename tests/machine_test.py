"""benchmarks/machine: the model name from a cpuinfo file, the architecture without one; the
environment record."""
import importlib.metadata
import platform

from benchmarks import machine


def test_cpu_model_reads_the_first_model_name(tmp_path):
  info = tmp_path / 'cpuinfo'
  info.write_text('processor\t: 0\nmodel name\t: Example CPU @ 2.00GHz\n'
                  'processor\t: 1\nmodel name\t: Other\n')
  assert machine.cpu_model(str(info)) == 'Example CPU @ 2.00GHz'


def test_cpu_model_without_cpuinfo_is_the_architecture(tmp_path):
  assert machine.cpu_model(str(tmp_path / 'missing')) == (platform.machine() or 'unknown')


def test_environment_names_versions_and_the_missing_distribution():
  env = machine.environment(['numpy', 'no-such-distribution-here'])
  assert env['versions'] == {'python': platform.python_version(),
                             'numpy': importlib.metadata.version('numpy'),
                             'no-such-distribution-here': None}
  assert env['machine']['cpu'] == machine.cpu_model() and env['machine']['cores'] >= 1
  assert len(env['machine']['load_average']) == 3 and env['date'][:2] == '20'
