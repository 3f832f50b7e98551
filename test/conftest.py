"""Shared test set-up: an isolated DDS domain per run, access to ../shared/reference, and the ROS 2
command-line tools (ros2, launch_testing)."""
import importlib.util
import logging
import os
import random
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO_ROOT.parent / 'shared' / 'reference'


def pytest_configure(config):
    # Keep this run's DDS traffic on loopback and away from other runs on the same machine.
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(1, 100)))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    # launch_testing's pytest plugin imports launch, which makes every logger created afterwards a
    # LaunchLogger that does not propagate: caplog would see nothing of stark_training's logs.
    logging.setLoggerClass(logging.Logger)


@pytest.fixture(scope='session')
def shared_reference() -> Path:
    """../shared/reference beside the clone: skipped where absent, a failure under CI."""
    from dataset_fixtures import require_shared

    return require_shared(SHARED_REFERENCE)


def require_ros2_tools(module: str = 'launch_testing', executable: str = 'ros2') -> None:
    """Skip the calling test module where the ROS 2 tools are missing (a user clone without ../shared
    and without a distro); under CI=true that is a failure, so CI never silently skips them."""
    missing = [name for name, found in ((module, importlib.util.find_spec(module)),
                                        (executable, shutil.which(executable))) if not found]
    if not missing:
        return
    message = (f'{" and ".join(missing)} not found: `make setup` installs the ROS 2 tools from '
               '../shared/vendor/ros2_python_tools_kilted, or source a ROS 2 distro first')
    if os.environ.get('CI') == 'true':
        pytest.fail(f'{message} (CI=true requires them)', pytrace=False)
    pytest.skip(message, allow_module_level=True)
