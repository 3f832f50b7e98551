"""The test-time motion prior on the corner maps (tracker.corner_window): off, the network's own
soft-argmax; on, the mode near the previous corner wins over a stronger one far away; the tracker
applies it through every backend's corner logits, and only where the variant asks."""
import dataclasses

import numpy as np
import pytest
import torch

from stark_model import create_tracker, load_model
from stark_model.backbone import STRIDE
from stark_model.config import ConfigError, TrackerConfig, load_variant
from stark_model.heads import CornerHead, windowed_corners


def _maps(cells: int, peaks: list[tuple[int, int, float]]) -> torch.Tensor:
    logits = torch.zeros(1, cells * cells)
    for row, col, height in peaks:
        logits[0, row * cells + col] = height
    return logits


def test_weight_zero_is_the_corner_heads_own_soft_argmax():
    torch.manual_seed(0)
    head = CornerHead(16, 16, 16, STRIDE).eval()
    with torch.no_grad():
        xyxy, tl, br = head(torch.randn(3, 16, 16, 16))
    logits = torch.stack([tl.flatten(1), br.flatten(1)], dim=1)
    previous = torch.tensor([[100.0, 90.0, 160.0, 170.0]]).repeat(3, 1)
    assert torch.allclose(windowed_corners(logits, previous, STRIDE, 0.0), xyxy, atol=1e-6)


def test_the_prior_prefers_the_mode_near_the_previous_corner():
    cells = 16
    # Top-left map: a peak at the previous corner (cell 6, 6) and a stronger one far away (cell 1, 14).
    tl = _maps(cells, [(6, 6, 8.0), (1, 14, 9.0)])
    br = _maps(cells, [(9, 9, 8.0)])
    logits = torch.stack([tl, br], dim=1)
    previous = torch.tensor([[6 * STRIDE, 6 * STRIDE, 9 * STRIDE, 9 * STRIDE]], dtype=torch.float32)
    size = cells * STRIDE
    plain = windowed_corners(logits, previous, STRIDE, 0.0)[0] * size
    windowed = windowed_corners(logits, previous, STRIDE, 4.0)[0] * size
    assert plain[0] > 10 * STRIDE  # the far peak wins without the prior
    assert abs(windowed[0] - 6 * STRIDE) < STRIDE and abs(windowed[1] - 6 * STRIDE) < STRIDE  # plain: 7 cells off
    # A single sharp peak at the previous corner stays there (the flat rest only draws it in a little).
    assert abs(windowed[2] - 9 * STRIDE) < 0.5 and abs(windowed[3] - 9 * STRIDE) < 0.5


def test_corner_window_is_validated_and_off_for_the_official_variants():
    for name in ('s50', 'st50', 'st101'):
        assert load_variant(name).tracker.corner_window == 0.0
    with pytest.raises(ConfigError, match='corner_window'):
        TrackerConfig(2.0, 128, 5.0, 320, True, corner_window=float('nan'))
    with pytest.raises(ConfigError, match='corner_window'):
        TrackerConfig(2.0, 128, 5.0, 320, True, corner_window=-1.0)


@pytest.mark.parametrize('backend', ['pytorch', 'onnxruntime'])
def test_tracker_applies_the_prior_through_the_backends_corner_logits(backend, tmp_path):
    pytest.importorskip('onnxruntime')
    torch.manual_seed(3)
    model = load_model(variant='lite_nano', allow_untrained=True)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(3)]
    boxes = {}
    for weight in (0.0, 2.0):
        variant = dataclasses.replace(model.variant, tracker=dataclasses.replace(model.variant.tracker,
                                                                                 corner_window=weight))
        tracker = create_tracker(dataclasses.replace(model, variant=variant), backend=backend,
                                 cache_dir=str(tmp_path))
        tracker.initialize(frames[0], (100.0, 80.0, 60.0, 40.0), 't')
        boxes[weight] = [tracker.track(frame)['t'].box for frame in frames[1:]]
    assert boxes[0.0] != boxes[2.0]
    for box in boxes[2.0]:
        assert all(np.isfinite(box))


def test_size_damping_moves_the_size_part_way_and_keeps_the_predicted_centre():
    from stark_model.tracker import damp_size_change

    damped = damp_size_change([10.0, 20.0, 40.0, 20.0], [100.0, 50.0, 80.0, 60.0], 0.25)
    assert damped[2:] == [50.0, 30.0]
    assert (damped[0] + damped[2] / 2, damped[1] + damped[3] / 2) == (140.0, 80.0)
    assert damp_size_change([0.0, 0.0, 4.0, 4.0], [1.0, 2.0, 8.0, 6.0], 1.0) == [1.0, 2.0, 8.0, 6.0]
    for bad in (0.0, 1.5, float('inf')):
        with pytest.raises(ConfigError, match='size_update_rate'):
            TrackerConfig(2.0, 128, 5.0, 320, True, size_update_rate=bad)
    for name in ('s50', 'st50', 'st101'):
        assert load_variant(name).tracker.size_update_rate == 1.0


def test_match_prior_gives_each_search_token_its_similarity_to_the_targets_template_cells():
    from stark_model.network import MatchPrior, Tokens

    prior = MatchPrior(template_cells=8, dim=4)
    assert prior.centre.tolist()[:4] == [18, 19, 20, 21] and len(prior.centre) == 16  # rows/cols 2..5 of 8x8
    with torch.no_grad():
        prior.proj.weight.copy_(torch.eye(4, 16))  # read the first 4 similarities back out
        prior.proj.bias.zero_()
    template = torch.randn(64, 1, 4)
    search = torch.zeros(9, 1, 4)
    search[3] = template[18] * 5.0  # a search cell that looks like the target's first cell
    tokens = Tokens(torch.cat([template, search]), torch.zeros(1, 73, dtype=torch.bool), torch.zeros(73, 1, 4))
    with torch.no_grad():
        out = prior(tokens, search_cells=9)
    assert torch.equal(out.features[:64], template)  # templates untouched
    assert float(out.features[64 + 3, 0, 0]) == pytest.approx(float(search[3, 0, 0]) + 1.0, abs=1e-5)  # cosine 1
    assert torch.equal(out.features[64 + 4], search[4])  # a zero cell has similarity 0 everywhere
    for name in ('s50', 'st50', 'st101', 'lite', 'lite_effnet'):
        assert not load_variant(name).model.match_prior
