"""Start quant_llm_node with config/robot.yaml.

    ros2 launch quant_llm_node robot.launch.py
    ros2 launch quant_llm_node robot.launch.py model:=qwen2.5-coder-1.5b-instruct-q4_k_m \
        profile:=orin_nx_16gb n_gpu_layers:=-1 namespace:=robot1

Empty arguments keep the value from the parameters file.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

PACKAGE = "quant_llm_node"


def _node(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    overrides = {}
    if arg("model"):
        overrides["model.name"] = arg("model")
    if arg("profile"):
        overrides["node.device_profile"] = arg("profile")
    if arg("n_gpu_layers"):
        overrides["engine.n_gpu_layers"] = int(arg("n_gpu_layers"))
    overrides["node.autostart"] = arg("autostart").lower() in ("1", "true", "yes")
    return [LifecycleNode(
        package=PACKAGE,
        executable=PACKAGE,
        name=PACKAGE,
        namespace=arg("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[arg("params_file"), overrides],
        arguments=["--ros-args", "--log-level", arg("log_level")],
    )]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "robot.yaml"),
                              description="node parameters (ROS 2 params file)"),
        DeclareLaunchArgument("model", default_value="",
                              description="manifest model name or .gguf path (empty: params file)"),
        DeclareLaunchArgument("profile", default_value="",
                              description="device profile, e.g. orin_nx_16gb (empty: params file)"),
        DeclareLaunchArgument("n_gpu_layers", default_value="",
                              description="layers offloaded to the GPU, -1 = all (empty: params file)"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate by itself (false: leave it to a "
                                          "lifecycle manager)"),
        DeclareLaunchArgument("log_level", default_value="info"),
        OpaqueFunction(function=_node),
    ])
