"""The README's ROS commands, run as written. Every `ros2 ...` and `stark-init ...` line of a
```bash block in README.md is extracted here (so a README edit is what gets tested) and run in a
subprocess on a private ROS_DOMAIN_ID, against `ros2 launch stark_ros tracker.launch.py` and a camera
publishing on the launch command's image_topic. A README command that this module does not know how
to check is a failure, and so is a `ros2 ...` phrase in the README's prose that no tested command
starts with."""
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import rclpy
from lifecycle_msgs.srv import GetState
from rclpy.context import Context
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from conftest import REPO_ROOT, require_ros2_tools
from stark_ros.driver import NodeClient

require_ros2_tools('ros2cli')

pytestmark = pytest.mark.slow

README = REPO_ROOT / 'README.md'
CLI_TIMEOUT_S = 60
NODE_UP_TIMEOUT_S = 120
COMMAND_START = re.compile(r'^(ros2|stark-init) ')


@dataclass(frozen=True)
class Command:
    raw: str  # as in the README, continuation lines joined
    line: int

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.raw, comments=True)

    @property
    def text(self) -> str:
        """The words without the comment, for messages and for matching the prose."""
        return ' '.join(self.argv)

    @property
    def kind(self) -> str:
        """What the command is, by its leading words ('ros2 launch', 'stark-init', ...)."""
        words = self.argv
        return ' '.join(words[:2]) if words[0] == 'ros2' else words[0]


def readme_commands(text: str) -> list[Command]:
    """The `ros2` / `stark-init` commands (and `export ...$(ros2 ...)` lines) of the ```bash blocks."""
    commands, in_block, pending, start = [], False, '', 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith('```'):
            in_block = line.strip() == '```bash' and not in_block
            continue
        if not in_block:
            continue
        if not pending:
            start = number
        pending += line.rstrip()
        if pending.endswith('\\'):
            pending = pending[:-1] + ' '
            continue
        if COMMAND_START.match(pending) or (pending.startswith('export ') and '$(ros2 ' in pending):
            commands.append(Command(pending, start))
        pending = ''
    return commands


def prose_phrases(text: str) -> set[str]:
    """`ros2 ...` phrases in inline code outside the code blocks (they must name a tested command)."""
    prose = re.sub(r'^```.*?^```', '', text, flags=re.M | re.S)
    return {match.strip() for span in re.findall(r'`([^`\n]+)`', prose)
            for match in re.findall(r'ros2 [a-z_]+(?: [A-Za-z_/.:=-]+)*', span)}


# ------------------------------------------------------------------------------------ set-up
@pytest.fixture(scope='module')
def commands() -> list[Command]:
    found = readme_commands(README.read_text())
    assert found, 'README.md has no ros2 commands in ```bash blocks'
    return found


@pytest.fixture(scope='module')
def ros_env(tmp_path_factory) -> dict[str, str]:
    """A domain no other ROS process on this machine uses, for the node and every command."""
    domain = free_domain()
    home = tmp_path_factory.mktemp('ros_home')  # the launch and node logs of this test
    env = {**os.environ, 'ROS_DOMAIN_ID': str(domain), 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
           'ROS_HOME': str(home), 'PYTHONUNBUFFERED': '1'}
    yield env
    # The CLI verbs start a ros2 daemon for the domain: leave none behind.
    subprocess.run(['ros2', 'daemon', 'stop'], env=env, capture_output=True, timeout=CLI_TIMEOUT_S)


def free_domain() -> int:
    """A ROS_DOMAIN_ID (other than this session's) in which no node answers discovery."""
    taken = int(os.environ.get('ROS_DOMAIN_ID', '0'))
    for domain in np.random.default_rng(os.getpid()).permutation(np.arange(1, 101)):
        if domain != taken and not nodes_in(int(domain)):
            return int(domain)
    pytest.fail('no free ROS_DOMAIN_ID in 1..100')


def nodes_in(domain: int, wait_s: float = 1.5) -> list[str]:
    context = Context()
    rclpy.init(context=context, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
    try:
        probe = Node('readme_domain_probe', context=context)
        time.sleep(wait_s)
        names = [name for name, _ in probe.get_node_names_and_namespaces() if name != 'readme_domain_probe']
        probe.destroy_node()
        return names
    finally:
        rclpy.try_shutdown(context=context)


# What the ros2 CLI says when its graph view has not caught up with a topic that exists (seen under
# load in CI for `ros2 topic echo --once /stark/detections`): a discovery race, not a README error.
NOT_DISCOVERED_YET = 'Could not determine the type for the passed topic'


def run(command: Command, env: dict[str, str], attempts: int = 3) -> subprocess.CompletedProcess:
    """The command as written; a topic command that lost the discovery race is run again (as written)."""
    argv = ['bash', '-c', command.raw] if command.kind == 'export' else command.argv
    for attempt in range(attempts):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        if result.returncode == 0 or NOT_DISCOVERED_YET not in result.stderr or attempt == attempts - 1:
            return result
        time.sleep(2.0)
    return result


class Launch:
    """`ros2 launch ...` in the background; stopped with SIGINT, as Ctrl-C does."""

    def __init__(self, command: Command, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, 'w')
        self.process = subprocess.Popen(command.argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


class Camera:
    """A camera publishing a 320x240 frame with a textured box at (120, 80, 60, 40), at 5 Hz."""

    def __init__(self, client: NodeClient) -> None:
        rng = np.random.default_rng(3)
        self.frame = rng.integers(40, 90, (240, 320, 3), dtype=np.uint8)
        self.frame[80:120, 120:180] = rng.integers(150, 255, (40, 60, 3), dtype=np.uint8)
        self._client, self._stop = client, threading.Event()
        self._thread = threading.Thread(target=self._run, name='readme_camera', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        index = 0
        while not self._stop.wait(0.2):
            index += 1
            self._client.publish(self.frame, 1_700_000_000_000_000_000 + index * 200_000_000)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def image_topic(command: Command) -> str:
    topic = next((word.split(':=', 1)[1] for word in command.argv if word.startswith('image_topic:=')), 'image')
    return topic if topic.startswith('/') else f'/{topic}'


def session_with_node(launch_command: Command, env: dict[str, str], tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> tuple[Launch, NodeClient]:
    """Start the launch command and a client (camera, service probe) on its domain."""
    monkeypatch.setenv('ROS_DOMAIN_ID', env['ROS_DOMAIN_ID'])  # NodeClient's rclpy context joins it
    launch = Launch(launch_command, env, tmp_path / 'launch.log')
    client = NodeClient('/', camera_qos='reliable', camera_topic=image_topic(launch_command))
    return launch, client


def wait_for(condition: Callable[[], object], what: str, launch: Launch,
             timeout: float = NODE_UP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert launch.process.poll() is None, f'ros2 launch exited while waiting for {what}:\n{launch.log()}'
        assert time.monotonic() < deadline, f'timed out waiting for {what}:\n{launch.log()}'
        time.sleep(0.1)


def daemon_sees(listing: list[str], name: str, env: dict[str, str], launch: Launch) -> None:
    """Wait until `listing` (a ros2 ... list command) names `name`. The CLI verbs ask the ros2 daemon
    about the graph, and a daemon that has not discovered the node yet answers "Node not found" or
    "Could not determine the type" (a person simply runs the command again)."""
    wait_for(lambda: name in subprocess.run(listing, env=env, capture_output=True, text=True,
                                            timeout=CLI_TIMEOUT_S).stdout.split(),
             f'the ros2 daemon to see {name}', launch, timeout=30)


# ------------------------------------------------------------------------------------ checks
def expect_ok(command: Command, result: subprocess.CompletedProcess, *texts: str) -> None:
    shown = f'README line {command.line}: {command.text}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}'
    assert result.returncode == 0, f'exit status {result.returncode}\n{shown}'
    for text in texts:
        assert text in result.stdout, f'{text!r} not printed\n{shown}'


def check_with_node(command: Command, result: subprocess.CompletedProcess) -> None:
    """What each command run against the running node must print."""
    kind = command.kind
    if kind == 'ros2 service':
        expect_ok(command, result, 'success=True')
        assert re.search(r"target_id='target-\d+'", result.stdout), result.stdout
    elif kind == 'ros2 topic':
        expect_ok(command, result, 'detections:', 'class_id: cup')
    elif kind == 'stark-init' and ('--cancel' in command.argv or '--cancel-all' in command.argv):
        expect_ok(command, result, 'cancelled')
    elif kind == 'stark-init':
        expect_ok(command, result, 'tracking ')
        target = re.search(r"tracking '([^']+)'", result.stdout).group(1)
        assert result.stdout.count(target) == 1, f'the target id is printed once: {result.stdout}'
    elif command.argv[:3] == ['ros2', 'param', 'describe']:
        expect_ok(command, result, f'Parameter name: {command.argv[4]}', 'Type: ')
    elif command.argv[:3] == ['ros2', 'param', 'set']:
        expect_ok(command, result, 'Set parameter successful')
    elif kind == 'ros2 param':
        expect_ok(command, result)
    else:
        pytest.fail(f'README line {command.line}: no check for {command.text!r} in {__file__}')


def is_plain_launch(command: Command) -> bool:
    return command.kind == 'ros2 launch' and not {'--show-args', 'managed:=true'} & set(command.argv) \
        and not any(word.startswith('exit_on_load_failure:=') for word in command.argv)


WITH_NODE = ('ros2 service', 'ros2 topic', 'ros2 param', 'stark-init')


# ------------------------------------------------------------------------------------ tests
def test_every_readme_ros_command_is_run_here(commands):
    """Each README command falls to one of the tests below; prose names only tested commands."""
    kinds = {'ros2 launch', 'ros2 run', 'ros2 lifecycle', *WITH_NODE}
    unknown = [c for c in commands if c.kind not in kinds and c.kind != 'export']
    assert not unknown, f'README commands this module does not run: {[(c.line, c.text) for c in unknown]}'
    assert sum(map(is_plain_launch, commands)) == 1, 'one plain `ros2 launch` to run the other commands against'
    for kind in ('ros2 service', 'ros2 topic', 'ros2 lifecycle'):
        assert any(c.kind == kind for c in commands), f'README lost its `{kind}` example'
    untested = sorted(p for p in prose_phrases(README.read_text())
                      if not any(c.text.startswith(p) or f'$({p}' in c.text for c in commands))
    assert not untested, f'README prose names ros2 commands that no tested command starts with: {untested}'


def test_launch_and_the_commands_against_the_node(commands, ros_env, tmp_path, monkeypatch):
    launch_command = next(c for c in commands if is_plain_launch(c))
    launch, client = session_with_node(launch_command, ros_env, tmp_path, monkeypatch)
    camera = None
    try:
        wait_for(lambda: client.init_client.service_is_ready() and client.camera.get_subscription_count() > 0,
                 'the node to offer its services', launch)
        camera = Camera(client)
        wait_for(lambda: client.latest_status() is not None, 'the first processed frame', launch, timeout=30)
        daemon_sees(['ros2', 'topic', 'list'], '/stark/detections', ros_env, launch)
        for command in (c for c in commands if c.kind in WITH_NODE):
            check_with_node(command, run(command, ros_env))
        assert 'Traceback' not in launch.log(), launch.log()
    finally:
        if camera:
            camera.close()
        client.close()
        code = launch.stop()
    assert code == 0, f'ros2 launch did not end cleanly on SIGINT (status {code}):\n{launch.log()}'
    assert 'process has finished cleanly' in launch.log(), launch.log()


def test_managed_launch_and_lifecycle_transitions(commands, ros_env, tmp_path, monkeypatch):
    launch_command = next(c for c in commands if c.kind == 'ros2 launch' and 'managed:=true' in c.argv)
    launch, client = session_with_node(launch_command, ros_env, tmp_path, monkeypatch)
    try:
        lifecycle = [c for c in commands if c.kind == 'ros2 lifecycle']
        get_state = client.node.create_client(GetState, '/stark_tracker/get_state')
        wait_for(get_state.service_is_ready, 'the lifecycle node', launch)
        daemon_sees(['ros2', 'service', 'list'], '/stark_tracker/change_state', ros_env, launch)
        assert not client.init_client.service_is_ready(), 'no services before activate'
        for command in lifecycle:
            expect_ok(command, run(command, ros_env), 'Transitioning successful')
        wait_for(lambda: client.init_client.service_is_ready(), 'the services after activate', launch, timeout=30)
    finally:
        client.close()
        code = launch.stop()
    assert code == 0, f'ros2 launch (managed) did not end cleanly on SIGINT (status {code}):\n{launch.log()}'


def test_commands_without_a_node(commands, ros_env):
    """--show-args, --help, the failing-checkpoint launch and the Fast DDS profile export."""
    ran = 0
    for command in commands:
        if command.argv[-1] == '--show-args':
            result = run(command, ros_env)
            expect_ok(command, result, "Arguments (pass arguments as '<name>:=<value>'):")
            for name in ('config_file', 'image_topic', 'namespace', 'device', 'checkpoint', 'managed',
                         'exit_on_load_failure'):
                assert f"'{name}':" in result.stdout, name
        elif command.kind == 'ros2 run':
            expect_ok(command, run(command, ros_env), 'usage: ', 'stark/init_target', 'model.checkpoint')
        elif command.kind == 'ros2 launch' and 'exit_on_load_failure:=true' in command.argv:
            result = run(command, ros_env)
            output = result.stdout + result.stderr
            assert result.returncode == 1, f'status {result.returncode}:\n{output}'
            assert 'exiting with status 1 (model.exit_on_load_failure is true)' in output, output
        elif command.kind == 'export':
            variable = command.argv[1].split('=')[0]
            result = subprocess.run(['bash', '-c', f'{command.raw}\nprintenv {variable}'], env=ros_env,
                                    capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
            expect_ok(command, result)
            assert Path(result.stdout.strip()).is_file(), result.stdout
        else:
            continue
        ran += 1
    assert ran >= 3, 'README lost its --show-args, --help or exit_on_load_failure example'
