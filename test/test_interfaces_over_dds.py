"""Our interfaces and the vision_msgs types cross process boundaries over real DDS."""
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import rclpy
from rclpy.node import Node
from vision_msgs.msg import Detection2DArray

from stark_ros.srv import InitTarget

PEERS = Path(__file__).parent / 'peers'
sys.path.insert(0, str(PEERS))
from detection_publisher import sample_message  # noqa: E402


@pytest.fixture
def node():
    context = rclpy.Context()
    rclpy.init(context=context)
    test_node = Node(f'dds_test_{uuid.uuid4().hex[:8]}', context=context)
    yield test_node
    test_node.destroy_node()
    rclpy.shutdown(context=context)


def start_peer(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(PEERS / script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_peer(process: subprocess.Popen) -> str:
    process.terminate()
    try:
        out, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


def spin_until(node: Node, done, timeout: float) -> None:
    executor = rclpy.executors.SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    executor.remove_node(node)


@pytest.mark.slow
def test_init_target_service_round_trip_across_processes(node):
    service = f'/test_{uuid.uuid4().hex[:8]}/init_target'
    server = start_peer('init_target_server.py', service)
    try:
        client = node.create_client(InitTarget, service)
        assert client.wait_for_service(timeout_sec=20), 'server process never appeared on DDS'
        request = InitTarget.Request(x=10.5, y=20.0, width=30.0, height=40.25, label='cup',
                                     target_id='cup-7')
        request.stamp.sec, request.stamp.nanosec = 42, 5
        future = client.call_async(request)
        spin_until(node, future.done, timeout=20)
        response = future.result()
        assert response is not None, 'no response within 20 s'
        assert response.success
        assert response.target_id == 'cup-7'
        assert response.message == 'box 10.5,20,30,40.25 at 42.000000005 label=cup'
    finally:
        output = stop_peer(server)
    assert 'ready' in output


@pytest.mark.slow
def test_detection_array_crosses_processes_with_all_fields(node):
    topic = f'/test_{uuid.uuid4().hex[:8]}/detections'
    received = []
    node.create_subscription(Detection2DArray, topic, received.append, 10)
    publisher = start_peer('detection_publisher.py', topic)
    try:
        spin_until(node, lambda: bool(received), timeout=20)
    finally:
        stop_peer(publisher)
    assert received, 'no Detection2DArray arrived from the other process within 20 s'
    assert received[0] == sample_message()


def test_services_live_in_srv_and_messages_in_msg():
    root = Path(__file__).resolve().parents[1]
    assert sorted(p.name for p in (root / 'srv').iterdir()) == ['CancelTarget.srv', 'InitTarget.srv']
    assert sorted(p.name for p in (root / 'msg').iterdir()) == ['TargetStatus.msg', 'TrackerStatus.msg']
    from ament_index_python.packages import get_package_share_directory
    share = Path(get_package_share_directory('stark_ros'))
    assert (share / 'srv' / 'InitTarget.srv').is_file() and (share / 'srv' / 'CancelTarget.srv').is_file()
    from stark_ros.msg import TrackerStatus
    from stark_ros.srv import CancelTarget
    assert InitTarget.__module__ == 'stark_ros.srv._init_target' and CancelTarget.Response().cancelled_ids == []
    assert TrackerStatus().model_state == ''
