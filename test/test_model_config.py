"""Variant YAMLs: the shipped ones match the original, and bad files name the bad key."""
import pytest
import yaml

from stark_model.config import ConfigError, available_variants, load_variant, variant_dir, variant_from_dict


def test_shipped_variants():
    assert available_variants() == ['lite', 'lite_effnet', 'lite_nano', 's50', 'st101', 'st50']
    s50, st50, st101 = load_variant('s50'), load_variant('st50'), load_variant('ST101')
    assert (s50.model.backbone, st50.model.backbone, st101.model.backbone) == ('resnet50', 'resnet50', 'resnet101')
    assert not s50.model.score_head and st50.model.score_head and st101.model.score_head
    for variant in (s50, st50, st101):
        m, t = variant.model, variant.tracker
        assert (m.hidden_dim, m.encoder_layers, m.decoder_layers, m.heads, m.feedforward_dim) == (256, 6, 6, 8, 2048)
        assert (m.dropout, m.num_queries, m.head_channels) == (0.1, 1, 256)
        assert (t.template_factor, t.template_size, t.search_factor, t.search_size) == (2.0, 128, 5.0, 320)
    assert not s50.tracker.dynamic_template and st50.tracker.dynamic_template


def test_update_intervals_per_benchmark_as_the_original():
    st50, st101 = load_variant('st50').tracker, load_variant('st101').tracker
    for name, frames in {'lasot': 200, 'got10k_test': 200, 'trackingnet': 25, 'vot20': 10}.items():
        assert st50.update_interval(name) == st101.update_interval(name) == frames
    assert (st50.update_interval('VOT20LT'), st101.update_interval('vot20lt')) == (200, 100)
    assert st50.update_interval('my_robot_camera') == 200
    assert st50.update_threshold == 0.5


def write_variant(tmp_path, mutate) -> str:
    data = yaml.safe_load((variant_dir() / 'stark_st50.yaml').read_text())
    mutate(data)
    path = tmp_path / 'custom.yaml'
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize('mutate, message', [
    (lambda d: d['model'].update(hiden_dim=256), 'unknown key model.hiden_dim'),
    (lambda d: d.update(extra=1), 'unknown key extra'),
    (lambda d: d['tracker'].pop('search_size'), 'missing key tracker.search_size'),
    (lambda d: d['model'].update(heads='eight'), 'model.heads must be int'),
    (lambda d: d['model'].update(score_head=1), 'model.score_head must be bool'),
    (lambda d: d['model'].update(backbone='vgg16'), "model.backbone: 'vgg16' is not one of"),
    (lambda d: d['tracker'].update(search_size=300), 'tracker.search_size must be a multiple'),
    (lambda d: d['tracker']['update_intervals'].update(lasot=0), 'tracker.update_intervals.lasot'),
    (lambda d: d['tracker']['update_intervals'].pop('default'), '"default" entry'),
    (lambda d: d['model'].update(heads=7), 'must be divisible by model.heads'),
])
def test_bad_config_names_the_key(tmp_path, mutate, message):
    path = write_variant(tmp_path, mutate)
    with pytest.raises(ConfigError) as error:
        load_variant(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_unknown_variant_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown model variant 'st200'.*lite, lite_effnet, lite_nano, s50, st101, st50"):
        load_variant('st200')
    with pytest.raises(ConfigError, match='cannot read model config'):
        load_variant(tmp_path / 'absent.yaml')
    (tmp_path / 'broken.yaml').write_text('model: [unclosed')
    with pytest.raises(ConfigError, match='not valid YAML'):
        load_variant(tmp_path / 'broken.yaml')


def test_round_trip_through_plain_data():
    variant = load_variant('st101')
    assert variant_from_dict(variant.to_dict()) == variant
