"""rosbag2 files for replay, read and written with the `rosbags` library (no ROS installation needed).

    stark-bag --dataset got10k --root /data/GOT-10k --split val --sequence GOT-10k_Val_000001 out_bag
    stark-bag --video clip.mp4 --groundtruth groundtruth.txt --compressed --storage mcap out_bag

A written bag holds the frames on one image topic (sensor_msgs/msg/Image rgb8, or CompressedImage
jpeg as image_transport writes it) and the ground truth on a vision_msgs/msg/Detection2DArray topic
whose header is the frame's (one detection with id 'groundtruth'; none where the target is absent).
Reading accepts bags that `ros2 bag record` wrote (sqlite3 or mcap, any rosbag2 version rosbags
reads): the image topic raw or compressed, ground truth from such a Detection2DArray topic or
from a groundtruth.txt with one box per image message.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

IMAGE_TOPIC = '/camera/image_raw'
GROUNDTRUTH_TOPIC = '/camera/groundtruth'
GROUNDTRUTH_ID = 'groundtruth'
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
DETECTIONS_TYPE = 'vision_msgs/msg/Detection2DArray'
START_NS = 1_700_000_000_000_000_000  # stamps of written bags start here (a fixed, plausible time)
# vision_msgs 4.x (the layout since Humble) as rosbags needs it registered: the fields and their
# order decide the RIHS01 type hashes, which a test checks against the interfaces built here.
VISION_MSGS = {
    'vision_msgs/msg/Point2D': 'float64 x\nfloat64 y\n',
    'vision_msgs/msg/Pose2D': 'vision_msgs/Point2D position\nfloat64 theta\n',
    'vision_msgs/msg/BoundingBox2D': 'vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n',
    'vision_msgs/msg/ObjectHypothesis': 'string class_id\nfloat64 score\n',
    'vision_msgs/msg/ObjectHypothesisWithPose':
        'vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n',
    'vision_msgs/msg/Detection2D': 'std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n'
                                   'vision_msgs/BoundingBox2D bbox\nstring id\n',
    'vision_msgs/msg/Detection2DArray': 'std_msgs/Header header\nvision_msgs/Detection2D[] detections\n',
}


class BagError(ValueError):
    """A bag (or its ground truth) that cannot be used; names the file, topic or line."""


def typestore() -> Any:
    """rosbags' latest ROS 2 message types plus vision_msgs 4.x."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    store = get_typestore(Stores.LATEST)
    types: dict = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


# ------------------------------------------------------------------------------------- writing
def _stamp(store: Any, stamp_ns: int) -> Any:
    return store.types['builtin_interfaces/msg/Time'](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def _image_message(store: Any, rgb: np.ndarray, header: Any, compressed: bool, quality: int) -> Any:
    if compressed:
        ok, data = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise BagError('JPEG encoding of a frame failed')
        return store.types['sensor_msgs/msg/CompressedImage'](header=header, format='rgb8; jpeg compressed bgr8',
                                                              data=np.frombuffer(data.tobytes(), np.uint8))
    height, width = rgb.shape[:2]
    return store.types['sensor_msgs/msg/Image'](header=header, height=height, width=width, encoding='rgb8',
                                                is_bigendian=0, step=width * 3,
                                                data=np.ascontiguousarray(rgb).reshape(-1))


def _groundtruth_message(store: Any, box: np.ndarray, header: Any) -> Any:
    types = store.types
    detections = []
    if np.all(np.isfinite(box)) and box[2] > 0 and box[3] > 0:
        x, y, w, h = (float(v) for v in box)
        centre = types['vision_msgs/msg/Pose2D'](position=types['vision_msgs/msg/Point2D'](x=x + w / 2, y=y + h / 2),
                                                 theta=0.0)
        detections.append(types['vision_msgs/msg/Detection2D'](
            header=header, results=[], bbox=types['vision_msgs/msg/BoundingBox2D'](center=centre, size_x=w, size_y=h),
            id=GROUNDTRUTH_ID))
    return types[DETECTIONS_TYPE](header=header, detections=detections)


def write_bag(path: Path, frames: Iterable[np.ndarray], boxes: np.ndarray | None, fps: float,
              compressed: bool = False, storage: str = 'sqlite3', image_topic: str = IMAGE_TOPIC,
              groundtruth_topic: str = GROUNDTRUTH_TOPIC, frame_id: str = 'camera', quality: int = 90) -> int:
    """Write RGB frames (and ground-truth boxes, one per frame, NaN where absent) as a rosbag2 at
    `fps`; returns the number of frames written. `path` must not exist (rosbag2's rule)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    if Path(path).exists():
        raise BagError(f'{path} exists; rosbag2 writes a new folder')
    if fps <= 0:
        raise BagError(f'frame rate must be positive, got {fps}')
    store = typestore()
    plugin = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}[storage]
    image_type = IMAGE_TYPES[1] if compressed else IMAGE_TYPES[0]
    topic = f'{image_topic}/compressed' if compressed else image_topic
    count = 0
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
        images = writer.add_connection(topic, image_type, typestore=store)
        truth = writer.add_connection(groundtruth_topic, DETECTIONS_TYPE, typestore=store) if boxes is not None else None
        for index, rgb in enumerate(frames):
            stamp_ns = START_NS + int(round(index * 1e9 / fps))
            header = store.types['std_msgs/msg/Header'](stamp=_stamp(store, stamp_ns), frame_id=frame_id)
            writer.write(images, stamp_ns, store.serialize_cdr(_image_message(store, rgb, header, compressed, quality),
                                                               image_type))
            if truth is not None:
                if index >= len(boxes):
                    raise BagError(f'{len(boxes)} ground-truth boxes for more frames than that')
                writer.write(truth, stamp_ns, store.serialize_cdr(_groundtruth_message(store, boxes[index], header),
                                                                  DETECTIONS_TYPE))
            count += 1
    return count


def video_frames(path: Path) -> tuple[Iterator[np.ndarray], float]:
    """RGB frames of a video file and its frame rate (30 where the file does not say)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise BagError(f'cannot open video {path}')
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()

    return frames(), fps


# ------------------------------------------------------------------------------------- reading
@dataclass
class BagFrame:
    """One image message: its header stamp, record time, type and serialized (CDR) bytes."""

    stamp_ns: int
    recorded_ns: int
    msgtype: str
    raw: bytes


@dataclass
class BagRecording:
    """The image messages of one topic in record order, and a ground-truth box per frame (NaN: none)."""

    path: Path
    image_topic: str
    frames: list[BagFrame]
    boxes: np.ndarray
    groundtruth_source: str

    @property
    def compressed(self) -> bool:
        return bool(self.frames) and self.frames[0].msgtype == IMAGE_TYPES[1]


def _pick_topic(topics: dict[str, str], wanted: str | None, types: tuple[str, ...], what: str, path: Path) -> str | None:
    listing = ', '.join(f'{t} ({m})' for t, m in sorted(topics.items())) or 'none'
    if wanted is not None:
        if wanted not in topics:
            raise BagError(f'{path}: no topic {wanted!r} (topics: {listing})')
        if topics[wanted] not in types:
            raise BagError(f'{path}: topic {wanted} carries {topics[wanted]}, not {" or ".join(types)}')
        return wanted
    candidates = [t for t, m in topics.items() if m in types]
    if len(candidates) > 1:
        raise BagError(f'{path}: several {what} topics ({", ".join(sorted(candidates))}); name one')
    return candidates[0] if candidates else None


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _detection_box(array: Any) -> np.ndarray:
    if not array.detections:
        return np.full(4, np.nan)
    bbox = array.detections[0].bbox
    # vision_msgs 4.x nests the centre in `position`; Foxy/Galactic bags have geometry_msgs/Pose2D.
    centre = getattr(bbox.center, 'position', bbox.center)
    return np.array([centre.x - bbox.size_x / 2, centre.y - bbox.size_y / 2, bbox.size_x, bbox.size_y])


def read_bag(path: Path, image_topic: str | None = None, groundtruth_topic: str | None = None,
             groundtruth_file: Path | None = None) -> BagRecording:
    """The frames of a rosbag2 and their ground truth (from `groundtruth_file`, one line per image
    message, or from the Detection2DArray topic, matched by header stamp). Message definitions
    stored in the bag win over ours, so older vision_msgs layouts read too."""
    from rosbags.highlevel import AnyReader
    path = Path(path)
    try:
        reader = AnyReader([path], default_typestore=typestore())
        reader.open()
    except Exception as error:  # rosbags raises its own errors for missing or broken metadata
        raise BagError(f'{path} is not a readable rosbag2: {error}') from None
    try:
        topics = {c.topic: c.msgtype for c in reader.connections}
        topic = _pick_topic(topics, image_topic, IMAGE_TYPES, 'image', path)
        if topic is None:
            raise BagError(f'{path}: no sensor_msgs Image or CompressedImage topic')
        gt_topic = None if groundtruth_file else _pick_topic(topics, groundtruth_topic, (DETECTIONS_TYPE,),
                                                            'Detection2DArray', path)
        frames, truth = _read_messages(reader, topic, gt_topic, path)
    finally:
        reader.close()
    if not frames:
        raise BagError(f'{path}: topic {topic} has no messages')
    if groundtruth_file is not None:
        boxes, source = _groundtruth_file_boxes(Path(groundtruth_file), len(frames), path, topic), str(groundtruth_file)
    elif gt_topic is not None:
        boxes = np.array([truth.get(f.stamp_ns, np.full(4, np.nan)) for f in frames])
        source = gt_topic
    else:
        boxes, source = np.full((len(frames), 4), np.nan), 'none'
    return BagRecording(path, topic, frames, boxes, source)


def _read_messages(reader: Any, topic: str, gt_topic: str | None,
                   path: Path) -> tuple[list[BagFrame], dict[int, np.ndarray]]:
    frames: list[BagFrame] = []
    truth: dict[int, np.ndarray] = {}
    for connection, recorded, raw in reader.messages(connections=[c for c in reader.connections
                                                                  if c.topic in (topic, gt_topic)]):
        try:
            message = reader.deserialize(raw, connection.msgtype)
        except Exception as error:
            raise BagError(f'{path}: a message on {connection.topic} does not decode as {connection.msgtype}: '
                           f'{type(error).__name__}: {error}') from None
        if connection.topic == topic:
            frames.append(BagFrame(_stamp_ns(message.header), recorded, connection.msgtype, bytes(raw)))
        else:
            truth[_stamp_ns(message.header)] = _detection_box(message)
    return frames, truth


def _groundtruth_file_boxes(groundtruth_file: Path, count: int, path: Path, topic: str) -> np.ndarray:
    from stark_training.datasets.base import DatasetError, read_boxes
    try:
        boxes = read_boxes(groundtruth_file, separators=', \t')
    except DatasetError as error:
        raise BagError(str(error)) from None
    if len(boxes) != count:
        raise BagError(f'{groundtruth_file}: {len(boxes)} boxes, but {path} has {count} messages on {topic}')
    return boxes


# ------------------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='stark-bag', description='Convert a dataset sequence or a video file '
                                     'to a rosbag2 (Image or CompressedImage, plus ground truth)',
                                     epilog='\n'.join(__doc__.splitlines()[2:5]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('output', type=Path, help='bag folder to create')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--video', type=Path, help='a video file (OpenCV reads it)')
    source.add_argument('--dataset', help='a dataset reader name (lasot, got10k, otb, folder, ...)')
    parser.add_argument('--root', help='dataset root (with --dataset)')
    parser.add_argument('--split', help='dataset split (lasot, got10k, trackingnet)')
    parser.add_argument('--sequence', help='sequence name (with --dataset)')
    parser.add_argument('--groundtruth', type=Path, help='groundtruth.txt for --video (x,y,w,h per frame)')
    parser.add_argument('--fps', type=float, default=0.0, help='frame rate (default: the video\'s, or 30)')
    parser.add_argument('--compressed', action='store_true', help='CompressedImage (jpeg) instead of Image rgb8')
    parser.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3')
    parser.add_argument('--image-topic', default=IMAGE_TOPIC)
    parser.add_argument('--groundtruth-topic', default=GROUNDTRUTH_TOPIC)
    return parser.parse_args(argv)


def _dataset_source(args: argparse.Namespace) -> tuple[Iterator[np.ndarray], np.ndarray, float]:
    from stark_training.evaluation.runner import open_split
    if not args.sequence:
        raise BagError('--dataset needs --sequence (and --root, except for synthetic)')
    dataset = open_split(args.dataset, args.root, args.split)
    names = dataset.sequence_names()
    if args.sequence not in names:
        raise BagError(f'{args.dataset} at {args.root} has no sequence {args.sequence!r}')
    sequence = dataset[names.index(args.sequence)]
    return (sequence.image(i) for i in range(len(sequence))), sequence.boxes, args.fps or 30.0


def main(argv: list[str] | None = None) -> int:
    """Console entry point; exit status 0 on success, 2 on bad input."""
    args = parse_args(argv)
    from stark_training.datasets import DatasetError
    from stark_training.evaluation.runner import EvaluationError
    try:
        if args.video:
            frames, fps = video_frames(args.video)
            boxes = None
            if args.groundtruth:
                from stark_training.datasets.base import read_boxes
                boxes = read_boxes(args.groundtruth, separators=', \t')
            fps = args.fps or fps
        else:
            frames, boxes, fps = _dataset_source(args)
        count = write_bag(args.output, frames, boxes, fps, args.compressed, args.storage, args.image_topic,
                          args.groundtruth_topic)
    except (BagError, DatasetError, EvaluationError, ValueError) as error:
        print(f'stark-bag: error: {error}', file=sys.stderr)
        return 2
    kind = 'CompressedImage' if args.compressed else 'Image'
    truth = 'with' if boxes is not None else 'without'
    print(f'wrote {count} frames ({kind}, {fps:g} fps) {truth} ground truth to {args.output} ({args.storage})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
