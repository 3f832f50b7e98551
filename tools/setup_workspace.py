#!/usr/bin/env python3
"""Set up the stark_ros workspace with one idempotent command (called by `make setup`).

Steps, each skipped when its inputs have not changed since the last run:
  1. a virtual environment at .venv/ (with the system site-packages where a ROS 2 distro is sourced);
  2. PyTorch, then either the ROS 2 wheels from PyPI (no distro sourced) or colcon if missing,
     then this project's Python dependencies (setup.py extras);
  3. without a distro, the ROS 2 command-line tools (ros2, launch, launch_testing) from
     ../shared/vendor/ros2_python_tools_kilted/, where that folder exists;
  4. the vision_msgs stand-in (underlay/vision_msgs) built into .underlay/, only where no real
     vision_msgs is importable;
  5. `colcon build --symlink-install` of stark_ros into install/.
Standard library only: it runs before anything else is installed.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / '.venv'
UNDERLAY = ROOT / '.underlay'
INSTALL = ROOT / 'install'
STAMP_DIR = VENV / '.stark_setup'
LOCK_FILE = ROOT / '.setup.lock'
TORCH_VERSION = '2.13.0'
PIP_EXTRAS = 'test,export,eval,train'
# Where the ROS wheels' exported CMake files point (the machine that built them).
WHEEL_BUILD_INCLUDE = '/opt/python/cp311-cp311/include/python3.11'
WHEEL_BUILD_NUMPY = '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include'
PUBLIC_PY_INCLUDES = ('target_include_directories(${_target_name_lib} PUBLIC ${Python3_INCLUDE_DIRS} '
                      '${Python3_NumPy_INCLUDE_DIRS})')
# Kilted's pure-Python ROS 2 tools (no wheels on PyPI): released sources and their installer.
ROS2_TOOLS = ROOT.parent / 'shared' / 'vendor' / 'ros2_python_tools_kilted'
# Files and folders whose names (not contents: installs are symlinks) decide the colcon install.
INSTALLED_TREES = ('stark_ros', 'stark_model', 'stark_training', 'launch', 'config')


class SetupError(RuntimeError):
    """A step failed; the message says which and what to do."""


@dataclass(frozen=True)
class Mode:
    """How ROS 2 is provided: a sourced distro, or wheels from PyPI inside the venv."""

    distro: str | None

    @property
    def from_pypi(self) -> bool:
        return self.distro is None

    def describe(self) -> str:
        if self.from_pypi:
            return 'ROS 2 Kilted from PyPI wheels in .venv (no ROS 2 distro sourced)'
        return f'sourced ROS 2 distro "{self.distro}" ({os.environ.get("AMENT_PREFIX_PATH", "")})'


def log(message: str) -> None:
    print(f'[setup] {message}', flush=True)


def run(cmd: list[str] | str, env: dict[str, str] | None = None, quiet: bool = False) -> None:
    """Run a command (a list, or a bash script string); raise SetupError with its output on failure."""
    shell_cmd = ['bash', '-c', cmd] if isinstance(cmd, str) else cmd
    shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
    log(f'$ {shown}')
    result = subprocess.run(shell_cmd, cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE if quiet else None,
                            stderr=subprocess.STDOUT if quiet else None)
    if result.returncode != 0:
        output = result.stdout[-6000:] if quiet and result.stdout else ''
        raise SetupError(f'command failed with exit code {result.returncode}: {shown}\n{output}')


def fingerprint(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(part.read_bytes() if part.is_file() else b'<missing>')
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b'\0')
    return digest.hexdigest()


def stamp_matches(name: str, value: str) -> bool:
    path = STAMP_DIR / f'{name}.stamp'
    return path.is_file() and path.read_text() == value


def write_stamp(name: str, value: str) -> None:
    STAMP_DIR.mkdir(parents=True, exist_ok=True)
    (STAMP_DIR / f'{name}.stamp').write_text(value)


def detect_mode() -> Mode:
    distro = os.environ.get('ROS_DISTRO')
    if not distro:
        return Mode(distro=None)
    probe = subprocess.run([sys.executable, '-c', 'import rclpy'], capture_output=True, text=True)
    if probe.returncode != 0:
        raise SetupError(
            f'ROS_DISTRO={distro} is set but {sys.executable} cannot import rclpy:\n'
            f'{probe.stderr.strip()}\nRun the setup with the Python that the distro was built for '
            '(make setup PYTHON=/usr/bin/python3), or open a shell without the distro sourced to '
            'use the ROS 2 wheels from PyPI instead.')
    return Mode(distro=distro)


def venv_python() -> Path:
    return VENV / 'bin' / 'python'


def environment_without(*prefixes: Path) -> dict[str, str]:
    """os.environ with every search-path entry under `prefixes` removed."""
    dropped = tuple(str(prefix) for prefix in prefixes)
    env = dict(os.environ)
    for var in ('AMENT_PREFIX_PATH', 'CMAKE_PREFIX_PATH', 'COLCON_PREFIX_PATH', 'PYTHONPATH',
                'LD_LIBRARY_PATH', 'PATH'):
        if var in env:
            env[var] = os.pathsep.join(p for p in env[var].split(os.pathsep) if not p.startswith(dropped))
    return env


def workspace_env(mode: Mode, with_underlay: bool = True) -> dict[str, str]:
    """The environment to build and run in: the venv first, and in PyPI mode the venv as ament prefix."""
    env = environment_without(INSTALL, UNDERLAY)  # a shell may have sourced them
    env['VIRTUAL_ENV'] = str(VENV)
    env['PATH'] = f'{VENV / "bin"}{os.pathsep}{env.get("PATH", "")}'
    env.pop('PYTHONHOME', None)
    if mode.from_pypi:
        for var in ('AMENT_PREFIX_PATH', 'CMAKE_PREFIX_PATH'):
            env[var] = str(VENV)
    if with_underlay and (UNDERLAY / 'install' / 'setup.bash').is_file():
        env = sourced_env(UNDERLAY / 'install' / 'setup.bash', env)
    return env


def sourced_env(script: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment after `source script` in bash."""
    out = subprocess.run(['bash', '-c', f'source {shlex.quote(str(script))} && env -0'],
                         env=env, capture_output=True, check=True)
    pairs = (item.split('=', 1) for item in out.stdout.decode().split('\0') if '=' in item)
    return dict(pairs)


def ensure_venv(mode: Mode) -> str:
    wanted = 'system-site-packages' if not mode.from_pypi else 'isolated'
    marker = STAMP_DIR / 'venv-kind'
    if venv_python().exists() and marker.is_file() and marker.read_text() == wanted:
        return f'.venv exists ({wanted})'
    if VENV.exists():
        log(f'.venv was made for another set-up (want {wanted}): recreating it')
        shutil.rmtree(VENV)
    cmd = [sys.executable, '-m', 'venv', str(VENV)]
    if not mode.from_pypi:
        # The distro's rclpy, numpy and cv2 live in the system site-packages.
        cmd.insert(3, '--system-site-packages')
    run(cmd)
    STAMP_DIR.mkdir(parents=True, exist_ok=True)
    marker.write_text(wanted)
    return f'created .venv ({wanted}) with {sys.executable}'


def has_nvidia_gpu() -> bool:
    smi = shutil.which('nvidia-smi')
    return bool(smi) and subprocess.run([smi, '-L'], capture_output=True).returncode == 0


def installed_torch(env: dict[str, str]) -> str | None:
    probe = subprocess.run([str(venv_python()), '-c', 'import torch; print(torch.__version__)'],
                           env=env, capture_output=True, text=True)
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_torch(env: dict[str, str]) -> str:
    current = installed_torch(env)
    if current and current.split('+')[0] == TORCH_VERSION:
        return f'torch {current} already installed'
    cmd = [str(venv_python()), '-m', 'pip', 'install', '-q', f'torch=={TORCH_VERSION}']
    index = os.environ.get('TORCH_INDEX_URL')
    if index:
        cmd += ['--index-url', index]
    gpu = has_nvidia_gpu()
    log(f'installing torch {TORCH_VERSION} ('
        + ('NVIDIA GPU found: the package index\'s CUDA build' if gpu else 'no NVIDIA GPU found')
        + (f', from {index}' if index else '') + ')')
    if not gpu and not index:
        log('hint: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu avoids CUDA libraries '
            'where no local CPU wheel is configured')
    run(cmd, env=env, quiet=True)
    return f'installed torch {installed_torch(env)}'


def adapt_wheel_cmake_files() -> int:
    """Make the ROS wheels' CMake files usable from this venv; returns how many files changed.

    * Their exported targets name the Python and numpy headers of the machine that built them.
    * rosidl_generator_py puts the numpy headers on the PUBLIC include path of each generated
      library; with the venv inside this source tree CMake refuses to export such a path. Upstream
      rosidl_python made them PRIVATE (ros2/rosidl_python#140); apply the same change here.
    """
    probe = subprocess.run(
        [str(venv_python()), '-c',
         'import sysconfig, numpy; print(sysconfig.get_paths()["include"]); print(numpy.get_include())'],
        capture_output=True, text=True, check=True)
    python_include, numpy_include = probe.stdout.split()
    replacements = [(WHEEL_BUILD_NUMPY, numpy_include), (WHEEL_BUILD_INCLUDE, python_include),
                    (PUBLIC_PY_INCLUDES, PUBLIC_PY_INCLUDES.replace(' PUBLIC ', ' PRIVATE '))]
    changed = 0
    for cmake_file in (VENV / 'share').rglob('*.cmake'):
        text = cmake_file.read_text(errors='surrogateescape')
        new_text = text
        for old, new in replacements:
            new_text = new_text.replace(old, new)
        if new_text != text:
            cmake_file.write_text(new_text, errors='surrogateescape')
            changed += 1
    return changed


def ensure_python_packages(mode: Mode, force: bool) -> str:
    requirements = sorted((ROOT / 'requirements').glob('*.txt'))
    key = fingerprint(mode.distro, sys.version, TORCH_VERSION, os.environ.get('TORCH_INDEX_URL'),
                      PIP_EXTRAS, ROOT / 'setup.py', *requirements)
    if not force and stamp_matches('python', key):
        return 'up to date'
    env = workspace_env(mode, with_underlay=False)
    pip = [str(venv_python()), '-m', 'pip', 'install', '-q']
    done = [ensure_torch(env)]
    if mode.from_pypi:
        run(pip + ['-r', 'requirements/ros-pypi.txt'], env=env, quiet=True)
        done.append(f'ROS 2 wheels ({adapt_wheel_cmake_files()} of their CMake files adapted to .venv)')
    elif not shutil.which('colcon', path=env['PATH']):
        run(pip + ['-r', 'requirements/build-tools.txt'], env=env, quiet=True)
        done.append('colcon into .venv')
    run(pip + ['-e', f'.[{PIP_EXTRAS}]'], env=env, quiet=True)
    done.append(f'stark_ros[{PIP_EXTRAS}] (editable)')
    write_stamp('python', key)
    return '; '.join(done)


def ros2_tools_absent_hint() -> str:
    return ('`ros2` (launch, service call, topic echo, param, lifecycle) and test/test_launch.py are '
            f'absent: {ROS2_TOOLS} was not found. Everything else works; for the ros2 tools source a '
            'ROS 2 distro (source /opt/ros/$ROS_DISTRO/setup.bash) before `make setup`, or put '
            'ros2_python_tools_kilted/ (sources.tar.xz, install.sh) there')


def ensure_ros2_tools(mode: Mode, force: bool) -> str:
    """Install ros2 launch/CLI/launch_testing into .venv from the vendored Kilted sources (PyPI mode)."""
    if not mode.from_pypi:
        return f'from the sourced distro ({"found" if shutil.which("ros2") else "ros2 not on PATH"})'
    archive, installer = ROS2_TOOLS / 'sources.tar.xz', ROS2_TOOLS / 'install.sh'
    if not (archive.is_file() and installer.is_file()):
        return 'skipped: ' + ros2_tools_absent_hint()
    # Hashing the 228 KB archive keeps a re-run quick and still notices a new release set.
    key = fingerprint(archive, installer, STAMP_DIR / 'python.stamp')
    if not force and stamp_matches('ros2-tools', key) and (VENV / 'bin' / 'ros2').is_file():
        return 'ros2 tools in .venv are up to date'
    with tempfile.TemporaryDirectory(prefix='ros2_tools_') as sources:
        run(['tar', '-xJf', str(archive), '-C', sources])
        run(['bash', str(installer), str(VENV), sources], env=workspace_env(mode, with_underlay=False), quiet=True)
    write_stamp('ros2-tools', key)
    return f'installed ros2, launch and launch_testing into .venv from {ROS2_TOOLS}'


SAMPLE_MEDIA = Path('/usr/share/doc/opencv-doc/examples/data')
SAMPLE_MEDIA_PACKAGE = 'opencv-doc'  # Debian/Ubuntu: vtest.avi (the demo) and the test photos


def ensure_sample_media() -> str:
    """Install Debian's opencv-doc (real footage for the demo, photos for tests) where apt can."""
    if (SAMPLE_MEDIA / 'vtest.avi').is_file():
        return f'{SAMPLE_MEDIA_PACKAGE} present'
    apt = shutil.which('apt-get')
    prefix = [] if os.geteuid() == 0 else (['sudo', '-n'] if shutil.which('sudo') else None)
    if apt is None or prefix is None:
        return (f'skipped: no apt-get (or no root/sudo) to install {SAMPLE_MEDIA_PACKAGE}; the demo '
                'falls back to a synthetic clip and the photo tests skip')
    env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
    install = prefix + [apt, 'install', '-y', '-q', '--no-install-recommends', SAMPLE_MEDIA_PACKAGE]
    result = subprocess.run(install, capture_output=True, text=True, env=env)
    if result.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(prefix + [apt, 'update', '-q'], capture_output=True, env=env)
        result = subprocess.run(install, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ['']
        return f'could not install {SAMPLE_MEDIA_PACKAGE} ({tail[0]}); the demo falls back to a synthetic clip'
    return f'installed {SAMPLE_MEDIA_PACKAGE}'


def real_vision_msgs(mode: Mode) -> str | None:
    """Where a real vision_msgs comes from, or None when it must be built here."""
    probe = subprocess.run(
        [str(venv_python()), '-c', 'import vision_msgs.msg, os; print(os.path.dirname(vision_msgs.__file__))'],
        env=workspace_env(mode, with_underlay=False), capture_output=True, text=True)
    return probe.stdout.strip() if probe.returncode == 0 else None


def colcon_command(mode: Mode, base_paths: str, build: Path, install: Path, log_dir: Path) -> str:
    """The colcon call; with a distro, CMake keeps the distro's Python (and its numpy headers)."""
    cmake_args = '-DBUILD_TESTING=OFF'
    if mode.from_pypi:
        cmake_args += f' -DPython3_EXECUTABLE={shlex.quote(str(venv_python()))}'
    return (f'colcon --log-base {shlex.quote(str(log_dir))} build --symlink-install '
            f'--base-paths {shlex.quote(base_paths)} --build-base {shlex.quote(str(build))} '
            f'--install-base {shlex.quote(str(install))} --cmake-args {cmake_args}')


def ensure_vision_msgs(mode: Mode, force: bool) -> str:
    real = real_vision_msgs(mode)
    if real:
        if UNDERLAY.exists():
            shutil.rmtree(UNDERLAY)  # a stale stand-in must not shadow the real package
        return f'real vision_msgs found at {real}; stand-in not built'
    source = ROOT / 'underlay' / 'vision_msgs'
    key = fingerprint(mode.distro, (STAMP_DIR / 'python.stamp'),
                      *sorted(p for p in source.rglob('*') if p.is_file()))
    if not force and stamp_matches('underlay', key) and (UNDERLAY / 'install' / 'setup.bash').is_file():
        return 'stand-in vision_msgs in .underlay/install is up to date'
    shutil.rmtree(UNDERLAY, ignore_errors=True)
    run(colcon_command(mode, 'underlay', UNDERLAY / 'build', UNDERLAY / 'install', UNDERLAY / 'log'),
        env=workspace_env(mode, with_underlay=False))
    write_stamp('underlay', key)
    return 'built the vision_msgs stand-in into .underlay/install'


def installed_file_names() -> list[str]:
    names = []
    for tree in INSTALLED_TREES:
        for path in sorted((ROOT / tree).rglob('*')):
            if path.is_file() and '__pycache__' not in path.parts and path.suffix != '.pyc':
                names.append(str(path.relative_to(ROOT)))
    return names


def build_workspace(mode: Mode, force: bool) -> str:
    build_inputs = [ROOT / 'package.xml', ROOT / 'CMakeLists.txt',
                    *sorted((ROOT / 'msg').iterdir()), *sorted((ROOT / 'srv').iterdir()),
                    *sorted((ROOT / 'scripts').iterdir()),
                    # The variant YAMLs are installed as copies (setup.py maps them into
                    # stark_model.model_configs), so their contents decide the install too.
                    *sorted((ROOT / 'config' / 'models').glob('*.yaml'))]
    key = fingerprint(mode.distro, installed_file_names(), *build_inputs,
                      STAMP_DIR / 'underlay.stamp', STAMP_DIR / 'python.stamp')
    if not force and stamp_matches('colcon', key) and (INSTALL / 'setup.bash').is_file():
        return 'install/ is up to date'
    run(colcon_command(mode, '.', ROOT / 'build', INSTALL, ROOT / 'log'), env=workspace_env(mode))
    write_stamp('colcon', key)
    return 'built stark_ros into install/'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--force', action='store_true', help='redo every step, ignoring the stamps')
    args = parser.parse_args(argv)
    started = time.monotonic()
    lock = open(LOCK_FILE, 'w')
    try:
        # Concurrent runs (two shells, parallel test jobs) would build into the same folders.
        fcntl.flock(lock, fcntl.LOCK_EX)
        mode = detect_mode()
        log(f'mode: {mode.describe()}')
        steps = [('virtual environment', lambda: ensure_venv(mode)),
                 ('python packages', lambda: ensure_python_packages(mode, args.force)),
                 ('ros2 tools', lambda: ensure_ros2_tools(mode, args.force)),
                 ('vision_msgs', lambda: ensure_vision_msgs(mode, args.force)),
                 ('colcon build', lambda: build_workspace(mode, args.force)),
                 ('sample media', ensure_sample_media)]
        for name, step in steps:
            step_start = time.monotonic()
            outcome = step()
            log(f'{name}: {outcome} ({time.monotonic() - step_start:.1f} s)')
    except (SetupError, subprocess.CalledProcessError) as error:
        log(f'FAILED: {error}')
        return 1
    finally:
        lock.close()
    log(f'done in {time.monotonic() - started:.1f} s. Enter the workspace with '
        '`source tools/workspace_env.sh` or run one command in it with `tools/in_workspace CMD`.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
