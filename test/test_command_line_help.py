"""Every executable the package installs answers --help with its usage and exit status 0, without
starting anything: the console scripts of setup.py and the `ros2 run stark_ros ...` executables that
CMakeLists.txt installs. The node executables list their parameters, topics and services."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from stark_ros.driver import installed_file
from stark_ros.node_usage import SERVICES, TOPICS
from stark_ros.parameters import SPECS

HELP_TIMEOUT_S = 60


def console_scripts() -> list[str]:
    return re.findall(r"'([a-z-]+) = [a-z_.]+:main'", (REPO_ROOT / 'setup.py').read_text())


def ros2_run_executables() -> list[str]:
    """What CMakeLists.txt installs into lib/stark_ros (the names `ros2 run stark_ros` takes)."""
    cmake = (REPO_ROOT / 'CMakeLists.txt').read_text()
    block = re.search(r'install\(PROGRAMS ([^)]*?)\s+DESTINATION lib/\$\{PROJECT_NAME\}\)', cmake).group(1)
    return [Path(path).name for path in block.split()]


def run_help(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=HELP_TIMEOUT_S)


def test_the_lists_are_complete():
    assert {'stark-init', 'stark-eval', 'stark-replay'} <= set(console_scripts())
    assert {'tracker_node', 'managed_tracker_node', 'init_target'} <= set(ros2_run_executables())


@pytest.mark.parametrize('script', console_scripts())
def test_console_scripts_print_usage(script):
    result = run_help([script, '--help'])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f'usage: {script}'), result.stdout[:500]


@pytest.mark.parametrize('executable', ros2_run_executables())
def test_ros2_run_executables_print_usage(executable):
    path = installed_file('lib', 'stark_ros', executable)
    result = run_help([sys.executable, str(path), '--help'])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('usage: '), result.stdout[:500]


@pytest.mark.parametrize('executable', ['tracker_node', 'managed_tracker_node'])
def test_node_usage_lists_parameters_topics_and_services(executable):
    path = installed_file('lib', 'stark_ros', executable)
    result = run_help([sys.executable, str(path), '-h', '--ros-args', '-p', 'model.device:=cpu'])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f'usage: {executable} [-h] [--ros-args'), result.stdout[:300]
    for name in [*SPECS, *(topic for topic, _ in TOPICS), *(service for service, _ in SERVICES)]:
        assert f'\n  {name}' in result.stdout, f'{name} missing from {executable} --help'
    assert ('configure loads the model' in result.stdout) == (executable == 'managed_tracker_node')
    assert 'subscribed to' not in result.stdout + result.stderr, 'no node may start'

    wrong = run_help([sys.executable, str(path), '--image', '/camera', '--ros-args', '-p', 'model.device:=cpu'])
    assert wrong.returncode == 2 and 'unrecognized arguments: --image /camera' in wrong.stderr, wrong.stderr
