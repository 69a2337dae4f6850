"""Start quant_llm_node with config/robot.yaml.

    ros2 launch quant_llm_node robot.launch.py
    ros2 launch quant_llm_node robot.launch.py model:=qwen2.5-coder-1.5b-instruct-q4_k_m \
        profile:=orin_nx_16gb n_gpu_layers:=-1 namespace:=robot1 log_level:=debug

Empty arguments keep the value from the parameters file. Values are checked before the node
starts (quant_llm_node.launch_args): a malformed one, e.g. n_gpu_layers:=abc, fails the launch
with a message naming the argument. `ros2 launch quant_llm_node robot.launch.py --show-args`
lists them with their descriptions.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from quant_llm_node.launch_args import ARGUMENTS, node_settings

PACKAGE = "quant_llm_node"


def _node(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    settings = node_settings(values)  # LaunchArgumentError names the malformed argument
    return [LifecycleNode(
        package=PACKAGE,
        executable=PACKAGE,
        name=PACKAGE,
        namespace=settings["namespace"],
        output="screen",
        emulate_tty=True,
        parameters=settings["parameters"],
        ros_arguments=settings["ros_arguments"],
    )]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    defaults = {"params_file": os.path.join(share, "config", "robot.yaml")}
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=defaults.get(name, default),
                                description=description)
          for name, (default, description) in ARGUMENTS.items()),
        OpaqueFunction(function=_node),
    ])
