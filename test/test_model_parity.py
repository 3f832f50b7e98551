"""Our networks compute the original STARK function: parity vectors, parameter counts, FLOPs.

The reference vectors in ../shared/reference/parity come from the original networks with
deterministic key-derived weights; the weights enter through the official-checkpoint loader.
"""
import importlib.util
import json

import numpy as np
import pytest
import torch

from stark_model import load_model
from stark_model.complexity import measure_complexity
from stark_model.network import Tokens

REFERENCE_NAMES = {'s50': 'S50', 'st50': 'ST50', 'st101': 'ST101'}
# From the original code (STARK facts): total and per-part parameter counts.
PARAMETERS = {'s50': 28_095_554, 'st50': 28_227_395, 'st101': 47_167_299}
BACKBONE_PARAMETERS = {'s50': 8_512_704, 'st50': 8_512_704, 'st101': 27_452_608}
PART_PARAMETERS = {'bottleneck': 262_400, 'transformer': 17_363_456, 'box_head': 1_956_738,
                   'cls_head': 131_841, 'query_embed': 256}
# Per-frame GFLOPs of the original at 128/320 px inputs (torch.utils.flop_counter).
GFLOPS = {'s50': (13.59, 10.93, 2.17), 'st50': (13.59, 12.43, 2.17), 'st101': (28.74, 12.43, 4.60)}


def official_checkpoint(shared_reference, variant: str, path) -> None:
    """Write the parity weights in the layout of an official model-zoo file."""
    parity = shared_reference / 'parity'
    spec = importlib.util.spec_from_file_location('parity_weights', parity / 'parity_weights.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    keys = json.loads((parity / f'keys_{REFERENCE_NAMES[variant]}.json').read_text())
    net = {key: torch.from_numpy(value) for key, value in module.parity_state_dict(keys).items()}
    net_type = 'STARKS' if variant == 's50' else 'STARKST'
    torch.save({'epoch': 50, 'actor_type': f'{net_type}Actor', 'net_type': net_type, 'net': net,
                'net_info': None, 'constructor': None, 'optimizer': None, 'stats': None}, path)


def relative_error(ours: torch.Tensor, reference: np.ndarray) -> float:
    ours = ours.detach().float().numpy().reshape(reference.shape)
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.mark.slow
@pytest.mark.parametrize('variant', list(REFERENCE_NAMES))
def test_forward_parity(variant, shared_reference, tmp_path):
    official_checkpoint(shared_reference, variant, tmp_path / 'STARK_ep0050.pth.tar')
    model = load_model(tmp_path / 'STARK_ep0050.pth.tar')
    assert model.variant.variant == variant, 'variant inferred from the official key layout'
    network = model.network.eval()
    data = np.load(shared_reference / 'parity' / f'parity_{REFERENCE_NAMES[variant]}.npz')

    captured = {}
    network.backbone[0].body.register_forward_hook(lambda m, i, o: captured.__setitem__('layer3', o))
    network.transformer.register_forward_hook(lambda m, i, o: captured.__setitem__('memory', o[1]))
    network.box_head.register_forward_hook(lambda m, i, o: captured.__setitem__('head_input', i[0]))
    crops = ['template1', 'template2', 'search'] if variant != 's50' else ['template1', 'search']
    with torch.inference_mode():
        tokens = [network.encode(torch.from_numpy(data[f'input/{name}/img']),
                                 torch.from_numpy(data[f'input/{name}/mask'])) for name in crops]
        output = network.decode(Tokens.concat(tokens))

    # Intermediates: relative 1e-3; outputs: absolute 1e-4 (tolerances of the parity README).
    assert relative_error(captured['layer3'], data['output/backbone_layer3_search']) <= 1e-3
    assert relative_error(captured['memory'], data['output/encoder_memory']) <= 1e-3
    assert relative_error(output.decoded, data['output/decoder_output_embed']) <= 1e-3
    assert relative_error(captured['head_input'], data['output/box_head_input']) <= 1e-3
    assert relative_error(output.score_map_tl, data['output/score_map_tl']) <= 1e-3
    assert relative_error(output.score_map_br, data['output/score_map_br']) <= 1e-3
    assert np.abs(output.boxes.numpy() - data['output/pred_boxes']).max() <= 1e-4
    if variant == 's50':
        assert output.logits is None
    else:
        assert np.abs(output.logits.numpy() - data['output/pred_logits']).max() <= 1e-4


@pytest.fixture(scope='module')
def complexities():
    measured = {}
    for variant in REFERENCE_NAMES:
        model = load_model(variant=variant, allow_untrained=True)
        measured[variant] = (model.network, measure_complexity(model.network, model.variant))
    return measured


@pytest.mark.slow
@pytest.mark.parametrize('variant', list(REFERENCE_NAMES))
def test_parameter_count_equals_original(variant, complexities):
    network, complexity = complexities[variant]
    assert complexity.parameters == PARAMETERS[variant]
    parts = {name: sum(p.numel() for p in getattr(network, name).parameters())
             for name in PART_PARAMETERS if getattr(network, name) is not None}
    assert sum(p.numel() for p in network.backbone.parameters()) == BACKBONE_PARAMETERS[variant]
    expected = {k: v for k, v in PART_PARAMETERS.items() if k != 'cls_head' or variant != 's50'}
    assert parts == expected


@pytest.mark.slow
@pytest.mark.parametrize('variant', list(REFERENCE_NAMES))
def test_flops_within_two_percent_of_original(variant, complexities):
    _, measured = complexities[variant]
    search, transformer, template = GFLOPS[variant]
    assert measured.per_frame_gflops == pytest.approx(search + transformer, rel=0.02)
    assert measured.search_backbone_gflops == pytest.approx(search, rel=0.02)
    assert measured.transformer_heads_gflops == pytest.approx(transformer, rel=0.02)
    assert measured.template_backbone_gflops == pytest.approx(template, rel=0.02)
