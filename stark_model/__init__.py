"""STARK networks, checkpoint IO and the test-time tracker; runs without ROS and without torchvision.

    from stark_model import load_model, create_tracker
    model = load_model('STARKST_ep0050.pth.tar')        # variant inferred from the weights
    tracker = create_tracker(model, device='auto')
    tracker.initialize(rgb_image, (x, y, w, h), 'cup')
    results = tracker.track(next_rgb_image)              # {'cup': TargetResult(box, score, ...)}
"""
from .checkpoint import Checkpoint, CheckpointError, file_sha256, read_checkpoint, save_checkpoint
from .config import ConfigError, VariantConfig, available_variants, load_variant
from .factory import LoadedModel, create_tracker, load_model
from .network import StarkNetwork, build_network
from .tracker import StarkTracker, TargetResult, TrackerError

__all__ = [
    'Checkpoint', 'CheckpointError', 'ConfigError', 'LoadedModel', 'StarkNetwork', 'StarkTracker',
    'TargetResult', 'TrackerError', 'VariantConfig', 'available_variants', 'build_network',
    'create_tracker', 'file_sha256', 'load_model', 'load_variant', 'read_checkpoint', 'save_checkpoint',
]
