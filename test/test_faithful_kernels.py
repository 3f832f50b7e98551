"""The default CPU fp32 path computes the original tracker's bits, not just its function.

Two choices decide the rounding: the layout the backbone receives (the original builds a (1, 3, H, W)
tensor whose convolutions run in plain NCHW) and the attention kernel (the original asks
nn.MultiheadAttention for its weights, which selects the unfused softmax(QK^T)V). The references
below redo those steps as the original's tracker does them (STARK_FACTS.md, official
lib/test/tracker/stark_utils.py and lib/models/stark/transformer.py, read for facts) on our modules,
and demand torch.equal. `fast_kernels=True` is the explicit opt-out and must really differ.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from backend_fixtures import lite_model
from stark_model import create_tracker
from stark_model.network import StarkNetwork, Tokens
from stark_model.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Crop, Normalizer, crop_square
from stark_model.tracker import StarkTracker
from stark_model.transformer import Transformer, fused_attention

HEIGHT, WIDTH = 240, 320


@pytest.fixture(scope='module')
def lite():
    return lite_model(seed=0)


@pytest.fixture(scope='module')
def frames() -> list[np.ndarray]:
    # A bright moving patch on noise, so that the boxes follow something and move frame to frame.
    rng = np.random.default_rng(7)
    images = []
    for index in range(5):
        image = rng.integers(0, 120, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        image[60 + 4 * index:110 + 4 * index, 90 + 6 * index:150 + 6 * index] = (250, 200, 40)
        images.append(image)
    return images


def original_preprocess(crop: Crop) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's per-crop preprocessing: float, permute to CHW, add the batch dimension."""
    image = torch.tensor(crop.image).float().permute((2, 0, 1)).unsqueeze(dim=0)
    mean = torch.tensor(IMAGENET_MEAN).view((1, 3, 1, 1))
    std = torch.tensor(IMAGENET_STD).view((1, 3, 1, 1))
    return ((image / 255.0) - mean) / std, torch.from_numpy(crop.mask).to(torch.bool).unsqueeze(dim=0)


def original_transformer(transformer: Transformer, tokens: Tokens, query_embed: torch.Tensor):
    """Post-norm encoder and decoder as the original calls them: attention with default arguments
    (need_weights=True), dropout left out (identity in eval mode)."""
    src, mask, pos = tokens.features, tokens.mask, tokens.pos
    for layer in transformer.encoder.layers:
        q = k = src + pos
        src = layer.norm1(src + layer.self_attn(q, k, value=src, key_padding_mask=mask)[0])
        src = layer.norm2(src + layer.linear2(torch.relu(layer.linear1(src))))
    memory = src
    query_pos = query_embed.unsqueeze(1).repeat(1, src.shape[1], 1)
    tgt = torch.zeros_like(query_pos)
    for layer in transformer.decoder.layers:
        q = k = tgt + query_pos
        tgt = layer.norm1(tgt + layer.self_attn(q, k, value=tgt)[0])
        attended = layer.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory,
                                        key_padding_mask=mask)[0]
        tgt = layer.norm2(tgt + attended)
        tgt = layer.norm3(tgt + layer.linear2(torch.relu(layer.linear1(tgt))))
    return transformer.decoder.norm(tgt).transpose(0, 1), memory


def original_boxes(network: StarkNetwork, templates: list[Crop], search: Crop) -> torch.Tensor:
    """One tracking step as the original computes it: normalised cxcywh boxes (1, Nq, 4)."""
    with torch.inference_mode():
        tokens = Tokens.concat([network.encode(*original_preprocess(crop)) for crop in [*templates, search]])
        decoded, memory = original_transformer(network.transformer, tokens, network.query_embed.weight)
        return network._predict_boxes(decoded, memory)[0]


def test_normalizer_gives_the_original_values_in_plain_nchw():
    rng = np.random.default_rng(0)
    crops = [Crop(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), rng.random((64, 64)) > 0.8, 1.0)
             for _ in range(2)]
    images, masks = Normalizer('cpu')(crops)
    assert images.is_contiguous(), 'plain NCHW, the layout whose convolutions the original runs'
    for index, crop in enumerate(crops):
        expected_image, expected_mask = original_preprocess(crop)
        assert torch.equal(images[index:index + 1], expected_image)
        assert torch.equal(masks[index:index + 1], expected_mask)
    fast, _ = Normalizer('cpu', channels_last=True)(crops)
    assert torch.equal(fast, images) and fast.is_contiguous(memory_format=torch.channels_last)


def test_backbone_features_equal_the_originals_bit_for_bit(lite):
    rng = np.random.default_rng(1)
    crop = Crop(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), np.zeros((128, 128), bool), 1.0)
    with torch.inference_mode():
        expected = lite.network.backbone[0].body(original_preprocess(crop)[0])
        ours = lite.network.backbone[0].body(Normalizer('cpu')([crop])[0])
        channels_last = lite.network.backbone[0].body(Normalizer('cpu', channels_last=True)([crop])[0])
    assert torch.equal(ours, expected)
    # The fast layout really runs other kernels (so the equality above is not vacuous).
    assert not torch.equal(channels_last, expected)
    assert torch.allclose(channels_last, expected, rtol=1e-4, atol=1e-4)


def test_tracker_boxes_equal_the_originals_bit_for_bit(lite, frames):
    """Five frames with the template replaced every other frame: every box equals the original's
    computation exactly (the float32 box the network predicts, and hence the mapped box)."""
    config = dataclasses.replace(lite.variant.tracker, update_intervals={'default': 2}, update_threshold=0.0)
    tracker = StarkTracker(lite.network, config)
    box = (90.0, 60.0, 60.0, 50.0)
    tracker.initialize(frames[0], box, 't')
    template = crop_square(frames[0], box, config.template_factor, config.template_size)
    templates = [template, template]
    predicted, updates = [], 0
    original = tracker.network.decode

    def capture(tokens):
        output = original(tokens)
        predicted.append(output.boxes.clone())
        return output

    tracker.network.decode = capture
    try:
        for frame in frames[1:]:
            search = crop_square(frame, tracker.box('t'), config.search_factor, config.search_size)
            expected = original_boxes(tracker.network, templates, search)
            result = tracker.track(frame)['t']
            assert torch.equal(predicted[-1], expected), f'frame {len(predicted)}: ' \
                f'max |diff| {(predicted[-1] - expected).abs().max().item():.3g}'
            if result.template_updated:
                updates += 1
                templates[1] = crop_square(frame, result.box, config.template_factor, config.template_size)
    finally:
        del tracker.network.decode
    assert len(predicted) == 4 and updates == 2


def test_fast_kernels_are_an_explicit_option_that_rounds_differently(lite, frames):
    exact, fast = create_tracker(lite), create_tracker(lite, fast_kernels=True)
    assert not exact.fast_kernels and fast.fast_kernels
    box = (90.0, 60.0, 60.0, 50.0)
    for tracker in (exact, fast):
        tracker.initialize(frames[0], box, 't')
    exact_box, fast_box = exact.track(frames[1])['t'].box, fast.track(frames[1])['t'].box
    assert exact_box == pytest.approx(fast_box, abs=1e-2)


def test_fused_attention_differs_from_the_originals_computation(lite):
    """The attention kernel alone changes bits: the reason it is not the default."""
    torch.manual_seed(3)
    transformer = lite.network.transformer
    length, dim = 80, transformer.decoder.norm.normalized_shape[0]
    tokens = Tokens(torch.randn(length, 2, dim), torch.zeros(2, length, dtype=torch.bool), torch.randn(length, 2, dim))
    tokens.mask[0, -20:] = True
    queries = lite.network.query_embed.weight
    with torch.inference_mode():
        expected = original_transformer(transformer, tokens, queries)
        ours = transformer(tokens.features, tokens.mask, tokens.pos, queries)
        with fused_attention():
            fused = transformer(tokens.features, tokens.mask, tokens.pos, queries)
    assert torch.equal(ours[1], expected[1]) and torch.equal(ours[0], expected[0])
    assert not torch.equal(fused[1], expected[1])
    assert torch.allclose(fused[1], expected[1], atol=1e-4)
