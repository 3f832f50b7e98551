"""Rosbag conversion (stark-bag) and replay through the node (stark-replay)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stark_training.evaluation import bags, formats
from stark_training.synthetic import make_sequence


def _sequence(frames: int = 6, seed: int = 2):
    video = make_sequence(num_frames=frames, width=160, height=120, seed=seed, target_size=36)
    return video.frames, np.array([b[0] for b in video.boxes])


def _built_type_hash(type_name: str) -> str:
    """The RIHS01 hash rosidl generated for an interface of this workspace (share/<pkg>/msg/<T>.json)."""
    package, _, name = type_name.split('/')
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        path = Path(prefix) / 'share' / package / 'msg' / f'{name}.json'
        if path.is_file():
            hashes = json.loads(path.read_text())['type_hashes']
            return next(h['hash_string'] for h in hashes if h['type_name'] == type_name)
    raise AssertionError(f'{type_name}: no generated type description under AMENT_PREFIX_PATH')


@pytest.mark.parametrize('type_name', sorted(bags.VISION_MSGS))
def test_vision_msgs_definitions_have_the_type_hashes_of_the_built_interfaces(type_name: str) -> None:
    assert bags.typestore().hash_rihs01(type_name) == _built_type_hash(type_name)


def test_bag_messages_read_in_rclpy_and_ros_messages_read_in_rosbags() -> None:
    # (Byte equality is not expected: rclpy leaves CDR alignment padding uninitialised.)
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray
    store = bags.typestore()
    frames, boxes = _sequence(1)
    header = store.types['std_msgs/msg/Header'](stamp=bags._stamp(store, 1_700_000_000_123_456_789), frame_id='cam')
    image = deserialize_message(bytes(store.serialize_cdr(bags._image_message(store, frames[0], header, False, 90),
                                                          'sensor_msgs/msg/Image')), Image)
    assert (image.header.stamp.sec, image.header.stamp.nanosec, image.header.frame_id) == (1_700_000_000, 123_456_789,
                                                                                            'cam')
    assert (image.height, image.width, image.encoding, image.step) == (120, 160, 'rgb8', 480)
    assert bytes(image.data) == frames[0].tobytes()
    truth = deserialize_message(bytes(store.serialize_cdr(bags._groundtruth_message(store, boxes[0], header),
                                                          bags.DETECTIONS_TYPE)), Detection2DArray)
    from stark_ros.messages import box_of
    assert truth.detections[0].id == 'groundtruth'
    np.testing.assert_allclose(box_of(truth.detections[0]), boxes[0])
    # And the other way: what rclpy writes (as ros2 bag record stores it), rosbags reads.
    back = store.deserialize_cdr(serialize_message(truth), bags.DETECTIONS_TYPE)
    np.testing.assert_allclose(bags._detection_box(back), boxes[0])
    back = store.deserialize_cdr(serialize_message(image), 'sensor_msgs/msg/Image')
    assert back.encoding == 'rgb8' and back.data.tobytes() == frames[0].tobytes()


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
@pytest.mark.parametrize('compressed', [False, True])
def test_bag_round_trip(tmp_path: Path, storage: str, compressed: bool) -> None:
    frames, boxes = _sequence(5)
    boxes[3] = np.nan  # the target is absent: an empty Detection2DArray
    assert bags.write_bag(tmp_path / 'bag', frames, boxes, 15.0, compressed, storage) == 5
    recording = bags.read_bag(tmp_path / 'bag')
    assert recording.compressed == compressed
    assert recording.image_topic == ('/camera/image_raw/compressed' if compressed else '/camera/image_raw')
    np.testing.assert_allclose(recording.boxes, boxes, equal_nan=True)
    stamps = [f.stamp_ns for f in recording.frames]
    assert np.diff(stamps).tolist() == [66_666_667, 66_666_666, 66_666_667, 66_666_667]


def test_bags_with_the_galactic_vision_msgs_layout_read_through_their_own_definitions(tmp_path: Path) -> None:
    """Galactic's BoundingBox2D centre is a geometry_msgs/Pose2D (x, y, theta), not 4.x's nested
    position: a bag recorded there (carrying that definition) gives the same boxes."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    old = get_typestore(Stores.ROS2_FOXY)
    definitions = dict(bags.VISION_MSGS, **{'vision_msgs/msg/BoundingBox2D':
                                             'geometry_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n'})
    types: dict = {}
    for name, text in definitions.items():
        types.update(get_types_from_msg(text, name))
    old.register(types)
    frames, boxes = _sequence(2)
    new = bags.typestore()
    with Writer(tmp_path / 'bag', version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection('/cam', 'sensor_msgs/msg/Image', typestore=new)
        truth = writer.add_connection('/gt', bags.DETECTIONS_TYPE, typestore=old)
        for index, (frame, box) in enumerate(zip(frames, boxes)):
            header = new.types['std_msgs/msg/Header'](stamp=bags._stamp(new, 10 + index), frame_id='c')
            writer.write(images, 10 + index, new.serialize_cdr(bags._image_message(new, frame, header, False, 90),
                                                               'sensor_msgs/msg/Image'))
            x, y, w, h = box
            t = old.types
            detection = t['vision_msgs/msg/Detection2D'](
                header=header, results=[], id='g', bbox=t['vision_msgs/msg/BoundingBox2D'](
                    center=t['geometry_msgs/msg/Pose2D'](x=x + w / 2, y=y + h / 2, theta=0.0), size_x=w, size_y=h))
            writer.write(truth, 10 + index, old.serialize_cdr(t[bags.DETECTIONS_TYPE](header=header,
                                                                                      detections=[detection]),
                                                              bags.DETECTIONS_TYPE))
    np.testing.assert_allclose(bags.read_bag(tmp_path / 'bag').boxes, boxes)


def test_groundtruth_file_aligns_by_frame_and_errors_name_the_problem(tmp_path: Path) -> None:
    frames, boxes = _sequence(4)
    bags.write_bag(tmp_path / 'bag', frames, None, 10.0)
    (tmp_path / 'gt.txt').write_text(formats.boxes_text(boxes))
    recording = bags.read_bag(tmp_path / 'bag', groundtruth_file=tmp_path / 'gt.txt')
    np.testing.assert_allclose(recording.boxes, boxes, atol=1e-3)
    (tmp_path / 'short.txt').write_text(formats.boxes_text(boxes[:3]))
    with pytest.raises(bags.BagError, match='3 boxes, but .* has 4 messages'):
        bags.read_bag(tmp_path / 'bag', groundtruth_file=tmp_path / 'short.txt')
    with pytest.raises(bags.BagError, match=r"no topic '/nope' \(topics: /camera/image_raw"):
        bags.read_bag(tmp_path / 'bag', image_topic='/nope')
    with pytest.raises(bags.BagError, match='not a readable rosbag2'):
        bags.read_bag(tmp_path)
    with pytest.raises(bags.BagError, match='exists'):
        bags.write_bag(tmp_path / 'bag', frames, None, 10.0)


def test_stark_bag_converts_a_dataset_sequence(tmp_path: Path, capsys) -> None:
    import cv2
    frames, boxes = _sequence(3)
    (tmp_path / 'clips' / 'a').mkdir(parents=True)
    for index, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / 'clips' / 'a' / f'{index:04d}.png'), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (tmp_path / 'clips' / 'a' / 'groundtruth.txt').write_text(formats.boxes_text(boxes))
    assert bags.main(['--dataset', 'folder', '--root', str(tmp_path / 'clips'), '--sequence', 'a', '--compressed',
                      '--storage', 'mcap', str(tmp_path / 'bag')]) == 0
    assert 'wrote 3 frames (CompressedImage, 30 fps) with ground truth' in capsys.readouterr().out
    recording = bags.read_bag(tmp_path / 'bag')
    assert len(recording.frames) == 3 and recording.compressed
    np.testing.assert_allclose(recording.boxes, boxes, atol=1e-3)
    assert bags.main(['--dataset', 'folder', '--root', str(tmp_path / 'clips'), '--sequence', 'b',
                      str(tmp_path / 'bag2')]) == 2
    assert "no sequence 'b'" in capsys.readouterr().err


def test_replay_reads_compressed_mcap_frames_as_the_node_decodes_them(tmp_path: Path) -> None:
    from stark_ros.replay import decode, ros_messages
    frames, boxes = _sequence(3)
    bags.write_bag(tmp_path / 'bag', frames, boxes, 10.0, compressed=True, storage='mcap')
    recording = bags.read_bag(tmp_path / 'bag')
    messages = ros_messages(recording)
    assert [m.format for m in messages] == ['rgb8; jpeg compressed bgr8'] * 3
    for message, frame, original in zip(messages, recording.frames, frames):
        assert message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec == frame.stamp_ns
        decoded = decode(message)
        assert decoded.shape == original.shape
        assert np.abs(decoded.astype(int) - original).mean() < 4  # JPEG quality 90


def test_stark_bag_converts_a_video_file(tmp_path: Path, capsys) -> None:
    import cv2
    images, boxes = _sequence(6, seed=4)
    writer = cv2.VideoWriter(str(tmp_path / 'clip.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 12.0, (160, 120))
    for image in images:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    (tmp_path / 'gt.txt').write_text(formats.boxes_text(boxes))
    assert bags.main(['--video', str(tmp_path / 'clip.avi'), '--groundtruth', str(tmp_path / 'gt.txt'),
                      str(tmp_path / 'bag')]) == 0
    assert 'wrote 6 frames (Image, 12 fps) with ground truth' in capsys.readouterr().out
    recording = bags.read_bag(tmp_path / 'bag')
    assert len(recording.frames) == 6
    np.testing.assert_allclose(recording.boxes, boxes, atol=1e-3)


@pytest.mark.slow
def test_replay_lockstep_through_the_node_gives_the_offline_boxes(tmp_path: Path) -> None:
    """The node and stark-replay as real processes, in lock-step, against the same checkpoint run
    offline on the same frames."""
    import torch
    from stark_model import create_tracker, load_model, save_checkpoint
    torch.manual_seed(0)
    model = load_model(variant='lite', allow_untrained=True)
    checkpoint = save_checkpoint(tmp_path / 'lite.pth.tar', model.network, model.variant)
    video = make_sequence(num_frames=10, width=320, height=240, seed=5, target_size=50)
    truth = np.array([b[0] for b in video.boxes])
    bags.write_bag(tmp_path / 'bag', video.frames, truth, 10.0)

    replay = Path(sys.executable).parent / 'stark-replay'
    completed = subprocess.run(
        [str(replay), str(tmp_path / 'bag'), '--checkpoint', str(checkpoint), '--threads', '1', '--mode', 'lockstep',
         '--output', str(tmp_path / 'out'), '--name', 'node'],
        capture_output=True, text=True, timeout=240, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert completed.returncode == 0, completed.stdout + completed.stderr
    replayed, _ = formats.read_result(tmp_path / 'out' / 'node', 'ope', 'bag')

    torch.set_num_threads(1)
    tracker = create_tracker(load_model(checkpoint))
    tracker.initialize(video.frames[0], truth[0], 'offline')
    offline = [truth[0]] + [tracker.track(frame)['offline'].box for frame in video.frames[1:]]
    np.testing.assert_allclose(replayed, np.array(offline), atol=6e-4)  # result files hold 3 decimals

    latency = json.loads((tmp_path / 'out' / 'node' / 'latency.json').read_text())
    assert latency['frames_dropped'] == 0 and latency['frames_answered'] == 9
    assert 0 < latency['latency_p50_ms'] <= latency['latency_p95_ms'] <= latency['latency_p99_ms']
    report = (tmp_path / 'out' / 'node' / 'report.md').read_text()
    assert 'End-to-end latency' in report and (tmp_path / 'out' / 'node' / 'success.png').is_file()
