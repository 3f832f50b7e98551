"""launch_testing check of launch/tracker.launch.py: the node starts from the launch file with its
arguments and offers its services. launch_testing comes from a ROS 2 distro or, without one, from
`make setup` (../shared/vendor/ros2_python_tools_kilted); where neither is there this module is
skipped, and under CI=true it fails."""
import os
import unittest

import pytest

from conftest import require_ros2_tools

require_ros2_tools('launch_testing')

import launch  # noqa: E402
import launch.actions  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402

from stark_ros.srv import CancelTarget, InitTarget  # noqa: E402

NAMESPACE = 'launch_test'


@pytest.mark.launch_test
def generate_test_description():
    launch_file = os.path.join(get_package_share_directory('stark_ros'), 'launch', 'tracker.launch.py')
    checkpoint = os.environ.get('STARK_LAUNCH_TEST_CHECKPOINT', '')
    return launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(
            launch.launch_description_sources.PythonLaunchDescriptionSource(launch_file),
            launch_arguments={'namespace': NAMESPACE, 'device': 'cpu', 'checkpoint': checkpoint,
                              'image_topic': 'camera/image_raw'}.items()),
        launch_testing.actions.ReadyToTest(),
    ])


class TestTrackerLaunch(unittest.TestCase):
    def test_services_come_up_in_the_namespace(self, proc_output):
        rclpy.init()
        try:
            node = rclpy.create_node('launch_test_probe')
            init = node.create_client(InitTarget, f'/{NAMESPACE}/stark/init_target')
            cancel = node.create_client(CancelTarget, f'/{NAMESPACE}/stark/cancel_target')
            self.assertTrue(init.wait_for_service(timeout_sec=60))
            self.assertTrue(cancel.wait_for_service(timeout_sec=10))
            proc_output.assertWaitFor(f'subscribed to /{NAMESPACE}/camera/image_raw', timeout=30)
            node.destroy_node()
        finally:
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
