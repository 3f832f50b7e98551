"""A bounded fuzz of the real node (stark_ros.fuzz, the same code as the full benchmark run):
hypothesis-generated camera messages and service requests over DDS. The node must stay up, stay
under the memory bound and refuse every bad input with a reason that names its cause."""
import pytest
import torch

from stark_model import load_model, save_checkpoint
from stark_ros.fuzz import fuzz

pytestmark = pytest.mark.slow


def test_fuzzed_images_and_requests_to_the_running_node(tmp_path):
    torch.manual_seed(13)
    model = load_model(variant='lite', allow_untrained=True)
    checkpoint = save_checkpoint(tmp_path / 'lite.pth.tar', model.network, model.variant)
    report = fuzz(images=300, requests_count=300, checkpoint=checkpoint, max_pixels=640 * 480,
                  rss_limit_mb=2000, seed=1234, progress=False)
    assert (report.images_sent, report.requests_sent) == (300, 300)
    assert report.images_refused_here > 30 and report.image_refusals, 'the fuzz reaches the refusals'
    assert report.node_frames_rejected > 0 and report.node_frames_received > 0
    assert report.requests_accepted > 0 and len(report.request_refusals) >= 3
    assert report.rss_peak_mb < 2000
