"""pip install for users who train, evaluate or profile without ROS.

`pip install .` installs stark_model, stark_training and stark_ros; only stark_ros needs ROS 2
(rclpy and the interfaces that `colcon build` generates). On a ROS 2 machine build the package with
colcon instead (see README.md).
"""
from setuptools import find_packages, setup

CORE = [
    'numpy>=1.24',
    'pyyaml>=6',
    'opencv-python-headless>=4.8',
    'torch>=2.1',
]

EXTRAS = {
    'export': ['onnx>=1.16', 'onnxruntime>=1.18'],
    'eval': ['rosbags>=0.10'],
    'test': ['pytest>=8', 'hypothesis>=6.100', 'onnx>=1.16', 'onnxruntime>=1.18', 'rosbags>=0.10'],
}

setup(
    name='stark-ros',
    version='0.1.0',
    description='STARK spatio-temporal transformer tracking for ROS 2, with training and evaluation',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['stark_model*', 'stark_training*', 'stark_ros*'])
    + ['stark_model.model_configs'],
    # The variant YAMLs live in config/models (one home for configuration); they ship inside
    # stark_model so that it finds them without ROS. colcon installs them to the same place.
    package_dir={'stark_model.model_configs': 'config/models'},
    package_data={'stark_model.model_configs': ['*.yaml']},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={
        'console_scripts': [
            'stark-init = stark_ros.init_client:main',
        ],
    },
)
