"""Start the STARK tracker node.

    ros2 launch stark_ros tracker.launch.py checkpoint:=/path/STARKST_ep0050.pth.tar image_topic:=/camera/image_raw
    ros2 launch stark_ros tracker.launch.py --show-args

Arguments left empty keep the value of the parameters file (config_file).
"""
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.events.process import ProcessExited
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
    'exit_on_load_failure': 'true: the node exits with status 1 when its model cannot be loaded, and the launch '
                            'ends (empty: from config_file)',
}
# Launch arguments that set a node parameter when given (not empty), and the parameter's type:
# a launch argument is text, and the node refuses text for a bool parameter.
PARAMETERS = {'device': ('model.device', str), 'checkpoint': ('model.checkpoint', str),
              'exit_on_load_failure': ('model.exit_on_load_failure', bool)}


def _typed(name: str, text: str, kind: type) -> str | bool:
    """A launch argument's text as the node parameter's type."""
    if kind is not bool:
        return text
    if text.lower() not in ('true', 'false'):
        raise ValueError(f'launch argument {name}:={text}: give true or false')
    return text.lower() == 'true'


def _fail_launch(event: ProcessExited, context: LaunchContext) -> None:
    """End `ros2 launch` with status 1 (an error raised here does) when the node failed."""
    if event.returncode > 0:
        raise RuntimeError(f'{event.action.process_description.final_name} exited with status {event.returncode} '
                           '(exit_on_load_failure: its model could not be loaded)')


def _node(context: LaunchContext) -> list[Node]:
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = {key: _typed(name, value[name], kind) for name, (key, kind) in PARAMETERS.items() if value[name]}
    return [Node(
        on_exit=_fail_launch if overrides.get('model.exit_on_load_failure') else None,
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
        'exit_on_load_failure': '',
    }
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=defaults[name], description=text)
         for name, text in ARGUMENTS.items()]
        + [OpaqueFunction(function=_node)])
