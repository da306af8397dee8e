"""benchmarks/machine: the model name from a cpuinfo file, the architecture without one."""
import platform

from benchmarks import machine


def test_cpu_model_reads_the_first_model_name(tmp_path):
  info = tmp_path / 'cpuinfo'
  info.write_text('processor\t: 0\nmodel name\t: Example CPU @ 2.00GHz\n'
                  'processor\t: 1\nmodel name\t: Other\n')
  assert machine.cpu_model(str(info)) == 'Example CPU @ 2.00GHz'


def test_cpu_model_without_cpuinfo_is_the_architecture(tmp_path):
  assert machine.cpu_model(str(tmp_path / 'missing')) == (platform.machine() or 'unknown')
