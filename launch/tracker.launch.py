"""Start the STARK tracker node.

    ros2 launch stark_ros tracker.launch.py checkpoint:=/path/STARKST_ep0050.pth.tar image_topic:=/camera/image_raw

Arguments left empty keep the value of the parameters file (config_file).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    'config_file': 'Parameters file of the node',
    'image_topic': 'Camera topic the node subscribes to (remaps "image")',
    'namespace': 'Namespace of the node and its topics',
    'device': 'cpu, cuda, cuda:N or auto (empty: from config_file)',
    'checkpoint': 'STARK checkpoint path (empty: from config_file)',
    'managed': 'true: the lifecycle node (managed_tracker_node), configured and activated by a lifecycle manager',
}


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = {key: value[name] for name, key in (('device', 'model.device'), ('checkpoint', 'model.checkpoint'))
                 if value[name]}
    return [Node(
        package='stark_ros',
        executable='managed_tracker_node' if value['managed'].lower() == 'true' else 'tracker_node',
        name='stark_tracker',
        namespace=value['namespace'],
        parameters=[value['config_file'], overrides],
        remappings=[('image', value['image_topic'])],
        output='screen',
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    defaults = {
        'config_file': PathJoinSubstitution([FindPackageShare('stark_ros'), 'config', 'tracker.yaml']),
        'image_topic': 'image',
        'namespace': '',
        'device': '',
        'checkpoint': '',
        'managed': 'false',
    }
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=defaults[name], description=text)
         for name, text in ARGUMENTS.items()]
        + [OpaqueFunction(function=_node)])
