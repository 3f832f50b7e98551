"""The node runs its model through the backend named by `model.backend` (here: onnxruntime)."""
from __future__ import annotations

import pytest
import torch

from stark_model import load_model, save_checkpoint
from stark_ros.driver import NodeClient, NodeProcess
from stark_training.synthetic import make_sequence

pytestmark = pytest.mark.slow


def test_node_tracks_through_the_onnxruntime_backend(tmp_path):
    torch.manual_seed(7)
    model = load_model(variant='lite', allow_untrained=True)
    checkpoint = save_checkpoint(tmp_path / 'lite.pth.tar', model.network, model.variant)
    sequence = make_sequence(num_frames=3, width=320, height=240, num_targets=1, seed=3, target_size=40)
    node = NodeProcess({'model.checkpoint': checkpoint, 'model.device': 'cpu', 'model.backend': 'onnxruntime'},
                       environment={'STARK_CACHE_DIR': str(tmp_path / 'cache')})
    peer = NodeClient(node.namespace)
    try:
        peer.wait_for_node(node=node)
        peer.wait_until(lambda: peer.latest_diagnostics().get('backend') == 'onnxruntime'
                        and peer.latest_diagnostics().get('variant') == 'lite', timeout=60,
                        what='diagnostics naming the onnxruntime backend')
        for attempt in range(20):  # best-effort camera QoS: re-send until a frame is there to init on
            peer.publish(sequence.frames[0], 1_000 + attempt)
            answer = peer.init_target(sequence.boxes[0][0], target_id='cup')
            if answer.success:
                break
        assert answer.success, answer.message
        assert list((tmp_path / 'cache').glob('*-decode-*.bin')), 'the ONNX graphs went to STARK_CACHE_DIR'
        assert node.alive()
    finally:
        peer.close()
        node.stop()
