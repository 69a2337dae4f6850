"""ament_python package of the node; the Python package lives in src/quant_llm_node."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "quant_llm_node"

setup(
    name=PACKAGE,
    version="0.1.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/profiles", glob("config/profiles/*.yaml")),
        (f"share/{PACKAGE}/models", glob("models/*.yaml")),
    ],
    install_requires=["setuptools", "numpy", "pyyaml"],
    zip_safe=True,
    maintainer="quant_llm_node maintainers",
    maintainer_email="maintainers@quant-llm-node.dev",
    description="GGUF LLM navigation reasoning node for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "quant_llm_node = quant_llm_node.ros.main:main",
            "quant-llm-query = quant_llm_node.cli.query:main",
            "quant-llm-models = quant_llm_node.cli.models:main",
            "quant-llm-eval = quant_llm_node.cli.evaluate:main",
            "quant-llm-bench = quant_llm_node.cli.bench:main",
            "quant-llm-quant = quant_llm_node.cli.quant_math:main",
            "quant-llm-embedder = quant_llm_node.cli.embedder:main",
        ],
    },
)
