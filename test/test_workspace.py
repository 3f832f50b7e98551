"""The workspace: colcon builds stark_ros and its interfaces; setup is idempotent; pip installs work."""
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / 'tools'))
import setup_workspace  # noqa: E402

VISION_MSGS_TYPES = ('Detection2DArray', 'Detection2D', 'BoundingBox2D', 'Pose2D', 'Point2D',
                     'ObjectHypothesisWithPose', 'ObjectHypothesis')


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f'{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}'
    return result


def tracked_files() -> list[str]:
    """Files of the package as a fresh clone has them (tracked plus untracked, not ignored)."""
    out = run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'], cwd=REPO_ROOT)
    return [line for line in out.stdout.splitlines() if (REPO_ROOT / line).is_file()]


@pytest.mark.slow
def test_colcon_builds_from_clean_tree_and_generated_types_import(tmp_path):
    source = tmp_path / 'src' / 'stark_ros'
    for name in tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, source / name)
    cmake_args = ['-DBUILD_TESTING=OFF']
    if (Path(sys.prefix) / 'share' / 'ament_index').is_dir():  # ROS from PyPI wheels in the venv
        cmake_args.append(f'-DPython3_EXECUTABLE={sys.executable}')
    env = setup_workspace.environment_without(REPO_ROOT / 'install')  # the venv and underlay stay
    run(['colcon', 'build', '--base-paths', 'src', '--cmake-args', *cmake_args], cwd=tmp_path, env=env)

    listed = run(['colcon', 'list', '--names-only', '--base-paths', 'src'], cwd=tmp_path, env=env).stdout.split()
    assert listed == ['stark_ros'], 'the vision_msgs stand-in must not be part of the root package'

    probe = (
        'import stark_ros.srv, stark_ros.msg, vision_msgs.msg, stark_model, stark_training\n'
        'print(stark_ros.srv.InitTarget.__module__, stark_ros.msg.TrackerStatus.__module__)\n'
        'print(sorted(stark_ros.srv.InitTarget.Request.get_fields_and_field_types()))\n'
        'print(stark_model.__file__)\n'
        'print(stark_model.config.variant_dir(), stark_model.load_variant("st101").model.backbone)\n'
        + ''.join(f'vision_msgs.msg.{name}()\n' for name in VISION_MSGS_TYPES))
    out = run(['bash', '-c', f'source install/setup.bash && cd / && {sys.executable} -c "$0"', probe],
              cwd=tmp_path, env=env).stdout.splitlines()
    assert out[0] == 'stark_ros.srv._init_target stark_ros.msg._tracker_status'
    assert out[1] == str(sorted(['x', 'y', 'width', 'height', 'stamp', 'target_id', 'label']))
    assert out[2].startswith(str(tmp_path / 'install')), 'stark_model must come from the new install'
    variant_dir, backbone = out[3].split()
    assert variant_dir.startswith(str(tmp_path / 'install')) and backbone == 'resnet101'
    for executable in ('lib/stark_ros/tracker_node', 'lib/stark_ros/init_target', 'bin/stark-init',
                       'share/stark_ros/launch/tracker.launch.py', 'share/stark_ros/config/tracker.yaml'):
        assert (tmp_path / 'install' / 'stark_ros' / executable).exists(), executable


def test_interfaces_have_the_documented_fields():
    from stark_ros.msg import TargetStatus, TrackerStatus
    from stark_ros.srv import CancelTarget, InitTarget

    assert InitTarget.Response.get_fields_and_field_types() == {
        'success': 'boolean', 'message': 'string', 'target_id': 'string'}
    assert InitTarget.Request.get_fields_and_field_types()['stamp'] == 'builtin_interfaces/Time'
    assert CancelTarget.Request.get_fields_and_field_types() == {
        'target_id': 'string', 'cancel_all': 'boolean'}
    assert (TargetStatus.IDLE, TargetStatus.TRACKING, TargetStatus.LOST) == (0, 1, 2)
    fields = TrackerStatus.get_fields_and_field_types()
    assert fields['targets'] == 'sequence<stark_ros/TargetStatus>'
    for name in ('input_fps', 'processed_fps', 'frames_dropped', 'latency_ms', 'latency_p95_ms'):
        assert name in fields


def vision_msgs_share() -> Path:
    from ament_index_python.packages import get_package_share_directory
    return Path(get_package_share_directory('vision_msgs'))


def test_vision_msgs_types_match_upstream_4x(shared_reference):
    reference = json.loads((shared_reference / 'vision_msgs_4.1.1.json').read_text())['types']
    import vision_msgs.msg
    for full_name, expected in reference.items():
        name = full_name.rsplit('/', 1)[1]
        fields = getattr(vision_msgs.msg, name).get_fields_and_field_types()
        assert list(fields) == [field for field, _ in expected['fields_in_order']], full_name
        description = vision_msgs_share() / 'msg' / f'{name}.json'
        if not description.is_file():
            pytest.skip(f'{description} absent: this ROS distro predates type hashes')
        hashes = json.loads(description.read_text())['type_hashes']
        ours = next(h['hash_string'] for h in hashes if h['type_name'] == full_name)
        assert ours == expected['type_hash'], f'{full_name} type hash differs from upstream'


def test_setup_rerun_is_a_no_op():
    started = time.monotonic()
    out = run([sys.executable, str(REPO_ROOT / 'tools' / 'setup_workspace.py')], cwd=REPO_ROOT).stdout
    elapsed = time.monotonic() - started
    assert '[setup] $ ' not in out, f'a re-run executed commands:\n{out}'
    for step in ('virtual environment', 'python packages', 'ros2 tools', 'vision_msgs', 'colcon build'):
        assert f'[setup] {step}:' in out
    assert 'up to date' in out.split('[setup] colcon build:')[1]
    assert elapsed < 20, f'setup re-run took {elapsed:.1f} s'


def test_setup_without_the_vendored_ros2_tools_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(setup_workspace, 'ROS2_TOOLS', tmp_path / 'no_shared' / 'ros2_python_tools_kilted')
    outcome = setup_workspace.ensure_ros2_tools(setup_workspace.Mode(distro=None), force=False)
    assert outcome.startswith('skipped: `ros2` (launch, service call')
    assert str(tmp_path / 'no_shared') in outcome and 'source /opt/ros/$ROS_DISTRO/setup.bash' in outcome
    assert 'Everything else works' in outcome


def test_missing_ros2_tools_skip_the_launch_tests_but_fail_them_under_ci(monkeypatch):
    from conftest import require_ros2_tools
    monkeypatch.delenv('CI', raising=False)
    with pytest.raises(pytest.skip.Exception, match='no_such_tool_module not found'):
        require_ros2_tools('no_such_tool_module')
    monkeypatch.setenv('CI', 'true')
    with pytest.raises(pytest.fail.Exception, match='CI=true requires them'):
        require_ros2_tools('no_such_tool_module')


def test_the_ros2_tools_are_installed_where_the_vendored_sources_are():
    if not setup_workspace.ROS2_TOOLS.is_dir():
        pytest.skip(f'{setup_workspace.ROS2_TOOLS} is absent')
    assert (setup_workspace.STAMP_DIR / 'ros2-tools.stamp').is_file()
    version = run([sys.executable, '-c', 'import pytest, launch_testing; print(pytest.__version__)']).stdout
    assert int(version.split('.')[0]) < 9, 'Kilted launch_testing breaks pytest 9'
    assert shutil.which('ros2') == str(Path(sys.prefix) / 'bin' / 'ros2')


@pytest.mark.slow
def test_pip_installs_the_three_packages_for_use_without_ros(tmp_path):
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
         '-w', str(tmp_path / 'dist'), str(REPO_ROOT)])
    wheel = next((tmp_path / 'dist').glob('stark_ros-*.whl'))
    names = zipfile.ZipFile(wheel).namelist()
    for package in ('stark_model', 'stark_training', 'stark_ros'):
        assert f'{package}/__init__.py' in names
    assert 'stark_model/model_configs/stark_st50.yaml' in names
    run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(tmp_path / 'site'),
         str(wheel)])
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'AMENT_PREFIX_PATH')}
    env['PYTHONPATH'] = str(tmp_path / 'site')
    probe = ('import sys, stark_model, stark_training\n'
             'assert stark_model.__file__.startswith(sys.argv[1]), stark_model.__file__\n'
             'assert "rclpy" not in sys.modules\n')
    run([sys.executable, '-c', probe, str(tmp_path / 'site')], env=env, cwd=tmp_path)
