"""stark-eval as a new user meets it (issue #16): the bundled model by default, DAVIS and OTB
copies in their real on-disk layouts (fixtures written here, and ../shared/data), the box-origin
convention, several trackers in one table, one summary format with stark-replay, and a quiet
NanoTrack baseline."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from dataset_fixtures import SHARED, require_shared, shared_data

from stark_training.evaluation import formats
from stark_training.evaluation.report import summary_line
from stark_training.evaluation.runner import main, track_sequence
from stark_training.synthetic import make_sequence

NANO_DIR = SHARED / 'baselines' / 'nanotrack_v2'


def default_name() -> str:
    """The result-folder name of the bundled model (its file name), whatever model is bundled."""
    from stark_model.factory import DEFAULT_MODEL_FILE
    return DEFAULT_MODEL_FILE.split('.')[0]


def nano_dir() -> Path:
    return require_shared(NANO_DIR)


def _video(seed: int, frames: int):
    video = make_sequence(num_frames=frames, width=160, height=120, seed=seed, target_size=36, motion=2.0)
    return video.frames, np.array([b[0] for b in video.boxes])


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def write_otb_copy(root: Path, names: tuple[str, ...] = ('Car1', 'Human7'), frames: int = 8) -> dict[str, np.ndarray]:
    """OTB as many copies ship it: <Seq>/img/0001.jpg ... and <Seq>/groundtruth.txt, 1-based boxes."""
    truth = {}
    for seed, name in enumerate(names):
        images, boxes = _video(seed, frames)
        for t, image in enumerate(images):
            _write_jpeg(root / name / 'img' / f'{t + 1:04d}.jpg', image)
        (root / name / 'groundtruth.txt').write_text(formats.boxes_text(boxes + [1, 1, 0, 0]))
        truth[name] = boxes + [1, 1, 0, 0]
    return truth


def write_davis_copy(root: Path, resolution: str = '288p', frames: int = 6) -> np.ndarray:
    """DAVIS-2016 at a resolution other than 480p: JPEGImages/<res>/<video>/00000.jpg, 0/255 masks."""
    images, boxes = _video(4, frames)
    for t, image in enumerate(images):
        stem = f'{2 * t:05d}'  # every second frame, original numbers kept (as ../shared's copy)
        _write_jpeg(root / 'JPEGImages' / resolution / 'cat' / f'{stem}.jpg', image)
        mask = np.zeros(image.shape[:2], np.uint8)
        x, y, w, h = np.round(boxes[t]).astype(int)
        mask[y:y + h, x:x + w] = 255
        (root / 'Annotations' / resolution / 'cat').mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / 'Annotations' / resolution / 'cat' / f'{stem}.png'), mask)
    return boxes


def test_without_a_tracker_option_the_bundled_model_runs(tmp_path: Path, capsys) -> None:
    write_otb_copy(tmp_path / 'otb', names=('Car1',), frames=5)
    assert main(['run', '--dataset', 'otb', '--root', str(tmp_path / 'otb'), '--output', str(tmp_path / 'out')]) == 0
    printed = capsys.readouterr().out
    assert f'1 to run with {default_name()} on 1 worker(s)' in printed and 'AUC ' in printed
    boxes, _ = formats.read_result(tmp_path / 'out' / default_name() / 'otb', 'ope', 'Car1')
    assert boxes.shape == (5, 4) and np.isfinite(boxes).all()


def test_davis_at_288p_runs_through_stark_eval(tmp_path: Path, capsys) -> None:
    truth = write_davis_copy(tmp_path / 'DAVIS')
    assert main(['run', '--dataset', 'davis', '--root', str(tmp_path / 'DAVIS'), '--baseline', 'kcf',
                 '--output', str(tmp_path / 'out')]) == 0
    boxes, _ = formats.read_result(tmp_path / 'out' / 'kcf' / 'davis', 'ope', 'cat')
    assert len(boxes) == len(truth)
    assert 'kcf: AUC' in capsys.readouterr().out


class EchoTracker:
    """Answers every frame with the box it was started from: shows what the runner hands over."""

    def initialize(self, image: np.ndarray, box) -> None:
        self.box = np.asarray(box, np.float64)

    def track(self, image: np.ndarray):
        return self.box


def test_box_origin_shifts_what_the_tracker_sees_and_nothing_else(tmp_path: Path) -> None:
    from stark_training.datasets import open_dataset
    truth = write_otb_copy(tmp_path / 'otb', names=('Car1',), frames=4)['Car1']
    sequence = open_dataset('otb', tmp_path / 'otb')[0]
    tracker = EchoTracker()
    boxes, _ = track_sequence(tracker, sequence)  # default 0: as written (the got10k toolkit's way)
    np.testing.assert_array_equal(tracker.box, truth[0])
    np.testing.assert_array_equal(boxes, [truth[0]] * 4)
    boxes, _ = track_sequence(tracker, sequence, box_origin=1)  # OTB counts from 1: the tracker gets 0-based
    np.testing.assert_array_equal(tracker.box, truth[0] - [1, 1, 0, 0])
    np.testing.assert_array_equal(boxes, [truth[0]] * 4)  # and its answers go back to the file's convention


def test_box_origin_1_results_have_their_own_folder_in_the_files_convention(tmp_path: Path) -> None:
    write_otb_copy(tmp_path / 'otb', names=('Car1',), frames=6)
    base = ['run', '--dataset', 'otb', '--root', str(tmp_path / 'otb'), '--baseline', 'kcf',
            '--output', str(tmp_path / 'out')]
    assert main(base) == 0 and main(base + ['--box-origin', '1']) == 0
    first = np.loadtxt(tmp_path / 'otb' / 'Car1' / 'groundtruth.txt', delimiter=',')[0]
    for label in ('otb', 'otb-boxorigin1'):  # never resumed from the other convention's files
        folder = tmp_path / 'out' / 'kcf' / label
        boxes, _ = formats.read_result(folder, 'ope', 'Car1')
        np.testing.assert_allclose(boxes[0], first, atol=1e-3)
        assert (folder / 'summary.json').is_file()


def test_several_trackers_in_one_run_give_one_table(tmp_path: Path, capsys) -> None:
    write_otb_copy(tmp_path / 'otb', frames=6)
    out = tmp_path / 'out'
    assert main(['run', '--dataset', 'otb', '--root', str(tmp_path / 'otb'), '--trackers', 'default,kcf,mil',
                 '--output', str(out)]) == 0
    printed = capsys.readouterr().out
    names = [default_name(), 'kcf', 'mil']
    header = '| Sequence | ' + ' | '.join(f'{n} AUC | {n} P@20px | {n} FPS' for n in names) + ' |'
    assert header in printed and '| Car1 |' in printed and '| Human7 |' in printed and '| **mean** |' in printed
    report = (out / 'compare-otb' / 'report.md').read_text()
    assert header in report and all(f'| {n} |' in report for n in names)
    for name in names:  # each tracker's own results, resumable as a single run's
        assert formats.is_finished(out / name / 'otb', 'ope', 'Car1')
    # A second run resumes: nothing is tracked again.
    assert main(['run', '--dataset', 'otb', '--root', str(tmp_path / 'otb'), '--trackers', 'default,kcf,mil',
                 '--output', str(out)]) == 0
    assert capsys.readouterr().out.count('2 already finished') == 3
    # stark-eval report prints the same table for folders made earlier.
    assert main(['report', '--dataset', 'otb', '--root', str(tmp_path / 'otb'), '--output', str(tmp_path / 'cmp'),
                 '--results'] + [str(out / name / 'otb') for name in names]) == 0
    assert header in capsys.readouterr().out


def test_several_trackers_errors_are_named(tmp_path: Path, capsys) -> None:
    write_otb_copy(tmp_path / 'otb', names=('Car1',), frames=3)
    base = ['run', '--dataset', 'otb', '--root', str(tmp_path / 'otb'), '--output', str(tmp_path / 'o')]
    assert main(base + ['--trackers', 'kcf,siamfc']) == 2
    assert "'siamfc' is neither default nor stark, a baseline" in capsys.readouterr().err
    assert main(base + ['--trackers', 'kcf,mil', '--name', 'x']) == 2
    assert '--name names one tracker' in capsys.readouterr().err
    assert main(base + ['--trackers', 'default,kcf,stark']) == 2
    assert f'--trackers names {default_name()} twice' in capsys.readouterr().err
    assert main(base + ['--trackers', 'kcf', '--name', 'x', '--threads', '-1']) == 2
    assert '--threads must be 0 or more' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ['--trackers', 'kcf', '--baseline', 'mil'])  # one way of naming trackers at a time


def test_eval_and_replay_print_the_same_summary_format() -> None:
    from stark_ros.replay import replay_summary
    figures = {'auc': 0.649, 'precision': 0.8012, 'normalized_precision': 0.7, 'average_overlap': 0.66,
               'sr50': 0.75, 'sr75': 0.5, 'fps': 12.34}
    assert summary_line(figures) == 'AUC 64.9  P@20 80.1  NP 70.0  AO 66.0  SR0.5 75.0  SR0.75 50.0  FPS 12.3'
    latency = {'latency_p50_ms': 10.0, 'latency_p95_ms': 20.0, 'latency_p99_ms': 30.04, 'frames_dropped': 2}
    assert replay_summary({**figures, **latency}) == \
        summary_line(figures) + '  |  latency ms p50 10.0 p95 20.0 p99 30.0  |  dropped 2'


def test_stark_replay_offline_prints_auc_as_stark_eval_does(tmp_path: Path, capsys) -> None:
    from stark_model.factory import default_checkpoint
    from stark_ros.replay import main as replay_main
    from stark_training.evaluation import bags
    images, truth = _video(6, 5)
    bags.write_bag(tmp_path / 'bag', images, truth, 10.0)
    assert replay_main([str(tmp_path / 'bag'), '--checkpoint', str(default_checkpoint()), '--offline',
                        '--threads', '1', '--output', str(tmp_path / 'out')]) == 0
    printed = capsys.readouterr().out
    assert 'AUC ' in printed and 'P@20 ' in printed and 'auc 0.' not in printed


def test_nano_baseline_prints_nothing_when_made(capfd) -> None:
    from stark_training.evaluation.baselines import make_baseline
    tracker = make_baseline('nano', nano_dir())
    images, truth = _video(2, 3)
    capfd.readouterr()
    level = cv2.utils.logging.getLogLevel()
    for _ in range(2):  # a fresh OpenCV tracker per sequence
        tracker.initialize(images[0], truth[0])
        tracker.track(images[1])
    captured = capfd.readouterr()
    assert captured.err == '' and captured.out == ''
    assert cv2.utils.logging.getLogLevel() == level  # the user's level is back


def test_on_shared_otb_val_and_davis(tmp_path: Path, capsys) -> None:
    """The real copies in ../shared/data: otb_val (groundtruth.txt, renumbered David) and DAVIS-2016 at 288p."""
    otb, davis = shared_data('otb_val'), shared_data('davis2016')
    assert main(['run', '--dataset', 'otb', '--root', str(otb), '--sequences', 'David', 'Skiing',
                 '--trackers', 'kcf', '--output', str(tmp_path / 'out')]) == 0
    assert main(['run', '--dataset', 'davis', '--root', str(davis), '--sequences', 'blackswan',
                 '--baseline', 'kcf', '--output', str(tmp_path / 'out')]) == 0
    for label, name, frames in (('otb', 'David', 471), ('otb', 'Skiing', 81), ('davis', 'blackswan', 25)):
        boxes, _ = formats.read_result(tmp_path / 'out' / 'kcf' / label, 'ope', name)
        assert len(boxes) == frames
    assert capsys.readouterr().out.count('kcf: AUC') == 2


def test_speed_comparison_times_both_trackers_on_the_same_frames_and_prints_the_ratios(tmp_path):
    from stark_training.evaluation.speed import measure, report

    write_otb_copy(tmp_path / 'clips', frames=8)
    lines = []
    fps = measure(str(tmp_path / 'clips'), str(nano_dir()), frames=5, out=lines.append)
    assert lines == ['Car1: 5 frames', 'Human7: 5 frames'] and fps['frames'] == 10
    assert fps['backend'].startswith('onnxruntime')  # backend auto: the default model's CPU backend
    for key in ('stark', 'nano', 'stark_model', 'nano_model'):
        assert 0 < fps[key] < float('inf'), key
    assert fps['stark_model'] >= fps['stark']  # the network is part of a tracking step
    assert fps['whole_ratio'] == pytest.approx(fps['stark'] / fps['nano'])
    table = report(fps, threads=1)
    assert '| whole tracker, FPS |' in table and f'{fps["whole_ratio"]:.2f}' in table
