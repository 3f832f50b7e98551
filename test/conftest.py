"""Shared test set-up: an isolated DDS domain per run, and access to ../shared/reference."""
import os
import random
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO_ROOT.parent / 'shared' / 'reference'


def pytest_configure(config):
    # Keep this run's DDS traffic on loopback and away from other runs on the same machine.
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(1, 100)))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')


@pytest.fixture(scope='session')
def shared_reference() -> Path:
    """../shared/reference beside the clone: skipped where absent, a failure under CI."""
    if not SHARED_REFERENCE.is_dir():
        if os.environ.get('CI') == 'true':
            pytest.fail(f'{SHARED_REFERENCE} is missing, and CI=true requires it')
        pytest.skip(f'{SHARED_REFERENCE} is absent (a user clone without ../shared)')
    return SHARED_REFERENCE
