"""stark-eval: runner, result writers, submission layouts, reports, baselines and checkpoint safety,
on small splits written here in the real on-disk layouts."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from stark_training.evaluation import formats
from stark_training.evaluation.baselines import BaselineError, make_baseline
from stark_training.evaluation.metrics import iou
from stark_training.evaluation.runner import main
from stark_training.synthetic import make_sequence

REPO = Path(__file__).resolve().parents[1]
NANO_DIR = REPO.parent / 'shared' / 'baselines' / 'nanotrack_v2'


def _synthetic(seed: int, frames: int = 12):
    video = make_sequence(num_frames=frames, width=160, height=120, seed=seed, target_size=36, motion=2.0)
    return video.frames, np.array([b[0] for b in video.boxes])


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def write_folder_split(root: Path, count: int = 2, frames: int = 12) -> dict[str, np.ndarray]:
    """`<root>/<seq>/` with 00001.jpg... and groundtruth.txt, as users lay out their own footage."""
    truth = {}
    for index in range(count):
        images, boxes = _synthetic(index, frames)
        name = f'clip-{index}'
        for t, image in enumerate(images):
            _write_jpeg(root / name / f'{t + 1:05d}.jpg', image)
        (root / name / 'groundtruth.txt').write_text(formats.boxes_text(boxes))
        truth[name] = boxes
    return truth


def write_got10k_test_split(root: Path, count: int = 2, frames: int = 8) -> dict[str, np.ndarray]:
    """GOT-10k test: list.txt, %08d.jpg frames, a groundtruth.txt with the first box only."""
    truth = {}
    for index in range(count):
        images, boxes = _synthetic(10 + index, frames)
        name = f'GOT-10k_Test_{index + 1:06d}'
        for t, image in enumerate(images):
            _write_jpeg(root / 'test' / name / f'{t + 1:08d}.jpg', image)
        (root / 'test' / name / 'groundtruth.txt').write_text(formats.boxes_text(boxes[:1]))
        truth[name] = boxes
    (root / 'test' / 'list.txt').write_text('\n'.join(truth) + '\n')
    return truth


def run_eval(*args: str) -> tuple[int, str, str]:
    """stark-eval as users run it: the installed console script in a fresh process."""
    script = Path(sys.executable).parent / 'stark-eval'
    completed = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300,
                               env={**os.environ, 'OMP_NUM_THREADS': '1'})
    return completed.returncode, completed.stdout, completed.stderr


def test_stark_eval_help_names_the_commands() -> None:
    code, out, _ = run_eval('--help')
    assert code == 0 and 'run' in out and 'report' in out
    code, out, _ = run_eval('run', '--help')
    assert code == 0 and '--workers' in out and '--baseline' in out and '--checkpoint' in out


@pytest.mark.slow
def test_runner_writes_reports_and_resumes_finished_sequences(tmp_path: Path, capsys) -> None:
    truth = write_folder_split(tmp_path / 'clips')
    args = ['run', '--dataset', 'folder', '--root', str(tmp_path / 'clips'), '--baseline', 'kcf',
            '--output', str(tmp_path / 'out')]
    assert main(args) == 0
    folder = tmp_path / 'out' / 'kcf' / 'folder'
    printed = capsys.readouterr().out
    assert '0 already finished' in printed and 'ETA' in printed and 'AUC' in printed
    for name, gt in truth.items():
        boxes, times = formats.read_result(folder, 'ope', name)
        assert boxes.shape == gt.shape and len(times) == len(gt) and (times > 0).all()
        np.testing.assert_allclose(boxes[0], gt[0], atol=1e-3)
        assert iou(boxes, gt).mean() > 0.5  # KCF follows these slow, textured targets
    for report_file in ('report.md', 'summary.json', 'success.png', 'precision.png', 'normalized_precision.png'):
        assert (folder / report_file).stat().st_size > 0
    report = (folder / 'report.md').read_text()
    assert 'clip-0' in report and 'clip-1' in report and '| kcf |' in report

    # Resume: finished sequences are not run again; a missing one is.
    stamp = (folder / 'clip-0.txt').stat().st_mtime_ns
    (folder / 'clip-1.txt').unlink()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert '1 already finished' in printed and '1 to run' in printed and 'clip-1' in printed
    assert (folder / 'clip-0.txt').stat().st_mtime_ns == stamp and (folder / 'clip-1.txt').is_file()


@pytest.mark.slow
def test_got10k_submission_format_file_by_file(tmp_path: Path) -> None:
    truth = write_got10k_test_split(tmp_path / 'GOT-10k')
    code, out, err = run_eval('run', '--dataset', 'got10k', '--root', str(tmp_path / 'GOT-10k'), '--split', 'test',
                              '--baseline', 'mil', '--output', str(tmp_path / 'out'), '--workers', '2')
    assert code == 0, err
    folder = tmp_path / 'out' / 'mil' / 'got10k-test'
    assert sorted(p.name for p in folder.iterdir()) == sorted(truth)
    for name, gt in truth.items():
        assert sorted(p.name for p in (folder / name).iterdir()) == [f'{name}_001.txt', f'{name}_time.txt']
        lines = (folder / name / f'{name}_001.txt').read_text().splitlines()
        assert len(lines) == len(gt)
        for line in lines:
            values = line.split(',')
            assert len(values) == 4 and all(float(v) == float(f'{float(v):.3f}') for v in values)
        assert [float(v) for v in lines[0].split(',')] == pytest.approx(gt[0].tolist(), abs=1e-3)
        times = (folder / name / f'{name}_time.txt').read_text().splitlines()
        assert len(times) == len(gt) and all(float(t) > 0 for t in times)
    archive = tmp_path / 'out' / 'mil' / 'got10k-test-submission.zip'
    with zipfile.ZipFile(archive) as bundle:
        assert sorted(bundle.namelist()) == sorted(f'{n}/{n}_{suffix}.txt' for n in truth for suffix in ('001', 'time'))
    assert 'nothing to score' in out


def test_trackingnet_submission_zip_holds_one_txt_per_sequence_at_its_root(tmp_path: Path) -> None:
    names = ['seq_a', 'seq_b']
    for name in names:
        formats.write_result(tmp_path / 'res', 'trackingnet', name, np.array([[1, 2, 3, 4.5]] * 3), np.ones(3))
    archive = formats.pack_submission(tmp_path / 'res', 'trackingnet', names, tmp_path / 'tn.zip')
    with zipfile.ZipFile(archive) as bundle:
        assert sorted(bundle.namelist()) == ['seq_a.txt', 'seq_b.txt']
        assert bundle.read('seq_a.txt').decode() == '1.000,2.000,3.000,4.500\n' * 3
    with pytest.raises(FileNotFoundError, match='seq_c'):
        formats.pack_submission(tmp_path / 'res', 'trackingnet', names + ['seq_c'], tmp_path / 'x.zip')


@pytest.mark.slow
def test_report_compares_several_trackers_on_one_figure(tmp_path: Path, capsys) -> None:
    write_folder_split(tmp_path / 'clips', count=1, frames=8)
    for baseline in ('kcf', 'mil'):
        assert main(['run', '--dataset', 'folder', '--root', str(tmp_path / 'clips'), '--baseline', baseline,
                     '--output', str(tmp_path / 'out')]) == 0
    assert main(['report', '--dataset', 'folder', '--root', str(tmp_path / 'clips'), '--results',
                 str(tmp_path / 'out' / 'kcf' / 'folder'), str(tmp_path / 'out' / 'mil' / 'folder'),
                 '--output', str(tmp_path / 'cmp')]) == 0
    report = (tmp_path / 'cmp' / 'report.md').read_text()
    assert '| kcf |' in report and '| mil |' in report and '![success.png](success.png)' in report
    assert (tmp_path / 'cmp' / 'success.png').read_bytes()[:4] == b'\x89PNG'


def test_bad_inputs_are_named(tmp_path: Path, capsys) -> None:
    write_folder_split(tmp_path / 'clips', count=1, frames=4)
    base = ['run', '--dataset', 'folder', '--root', str(tmp_path / 'clips'), '--output', str(tmp_path / 'o')]
    assert main(base + ['--checkpoint', str(tmp_path / 'missing.pth')]) == 2
    assert 'missing.pth does not exist' in capsys.readouterr().err
    assert main(base + ['--baseline', 'nano', '--nano-dir', str(tmp_path)]) == 2
    assert 'nanotrack_backbone_sim.onnx' in capsys.readouterr().err
    assert main(base + ['--baseline', 'kcf', '--split', 'test']) == 2
    assert 'has no splits' in capsys.readouterr().err
    assert main(base + ['--baseline', 'kcf', '--sequences', 'nope']) == 2
    assert "no sequence 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize('name', ['csrt', 'kcf', 'mil', 'nano'])
def test_baselines_follow_a_synthetic_target(name: str) -> None:
    if name == 'nano' and not NANO_DIR.is_dir():
        if os.environ.get('CI') == 'true':
            pytest.fail(f'{NANO_DIR} is missing, and CI=true requires it')
        pytest.skip(f'{NANO_DIR} is absent (a user clone without ../shared)')
    images, gt = _synthetic(3, frames=15)
    tracker = make_baseline(name, NANO_DIR if name == 'nano' else None)
    tracker.initialize(images[0], gt[0])
    boxes = np.array([gt[0]] + [tracker.track(image) for image in images[1:]])
    assert boxes.dtype == np.float64 and boxes.shape == gt.shape
    assert iou(boxes, gt).mean() > 0.5, f'{name} lost the target: {iou(boxes, gt).round(2)}'


def test_baseline_errors_name_the_problem() -> None:
    with pytest.raises(BaselineError, match='unknown baseline'):
        make_baseline('siamfc')
    with pytest.raises(BaselineError, match='needs nano_dir'):
        make_baseline('nano')
    with pytest.raises(BaselineError, match='track\\(\\) before initialize'):
        make_baseline('kcf').track(np.zeros((8, 8, 3), np.uint8))


@pytest.fixture(scope='module')
def untrained_lite(tmp_path_factory) -> Path:
    """An untrained lite model saved as a real checkpoint (fixed seed), loaded as users' checkpoints are."""
    import torch
    from stark_model import load_model, save_checkpoint
    torch.manual_seed(0)
    model = load_model(variant='lite', allow_untrained=True)
    return save_checkpoint(tmp_path_factory.mktemp('ckpt') / 'lite_untrained.pth.tar', model.network, model.variant)


def test_stark_checkpoint_run_gives_the_trackers_own_boxes(tmp_path: Path, untrained_lite: Path, capsys) -> None:
    import torch
    from stark_model import create_tracker, load_model
    from stark_training.datasets import open_dataset
    write_folder_split(tmp_path / 'clips', count=1, frames=5)
    assert main(['run', '--dataset', 'folder', '--root', str(tmp_path / 'clips'), '--checkpoint', str(untrained_lite),
                 '--output', str(tmp_path / 'out'), '--threads', '1']) == 0
    assert '1 to run with lite_untrained on 1 worker(s)' in capsys.readouterr().out
    # The node's tracker, driven directly through its own initialize/track calls.
    torch.set_num_threads(1)
    tracker = create_tracker(load_model(untrained_lite))
    sequence = open_dataset('folder', tmp_path / 'clips')[0]
    tracker.initialize(sequence.image(0), sequence.boxes[0], 'a')
    expected = [sequence.boxes[0]] + [tracker.track(sequence.image(t))['a'].box for t in range(1, len(sequence))]
    written, _ = formats.read_result(tmp_path / 'out' / 'lite_untrained' / 'folder', 'ope', sequence.name)
    np.testing.assert_allclose(written, np.array(expected), atol=6e-4)  # files hold 3 decimals


def test_hostile_checkpoint_given_to_stark_eval_never_runs(tmp_path: Path, capsys) -> None:
    import torch
    from hostile_files import write_torchscript_bomb
    proof = tmp_path / 'proof_marker'
    torch.jit.load(str(write_torchscript_bomb(tmp_path / 'proof.pth.tar', proof)))
    assert proof.exists()  # the bomb is real: a plain load sets it off
    marker = tmp_path / 'marker'
    bomb = write_torchscript_bomb(tmp_path / 'model.pth.tar', marker)
    write_folder_split(tmp_path / 'clips', count=1, frames=3)
    assert main(['run', '--dataset', 'folder', '--root', str(tmp_path / 'clips'), '--checkpoint', str(bomb),
                 '--output', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert 'stark-eval: error:' in err and str(bomb) in err
    assert not marker.exists()
    assert not (tmp_path / 'out' / 'model' / 'folder' / 'clip-0.txt').exists()


def write_got10k_val_split(root: Path, count: int = 2, frames: int = 10) -> dict[str, np.ndarray]:
    """GOT-10k val: frames, groundtruth.txt, cover/absence/cut_by_image labels, meta_info.ini."""
    truth = {}
    for index in range(count):
        images, boxes = _synthetic(20 + index, frames)
        name = f'GOT-10k_Val_{index + 1:06d}'
        folder = root / 'val' / name
        for t, image in enumerate(images):
            _write_jpeg(folder / f'{t + 1:08d}.jpg', image)
        cover = [8] * frames
        cover[frames // 2] = 0  # one fully occluded frame: left out of the scores
        (folder / 'groundtruth.txt').write_text(formats.boxes_text(boxes))
        (folder / 'cover.label').write_text(''.join(f'{c}\n' for c in cover))
        (folder / 'absence.label').write_text(''.join(f'{int(c == 0)}\n' for c in cover))
        (folder / 'cut_by_image.label').write_text('0\n' * frames)
        (folder / 'meta_info.ini').write_text('[METAINFO]\nresolution: (160, 120)\n')
        truth[name] = boxes
    (root / 'val' / 'list.txt').write_text('\n'.join(truth) + '\n')
    return truth


def test_runner_got10k_val_report_matches_got10k_toolkit(tmp_path: Path, monkeypatch) -> None:
    import json
    toolkit = pytest.importorskip('got10k.experiments')
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    write_got10k_val_split(tmp_path / 'GOT-10k')
    assert main(['run', '--dataset', 'got10k', '--root', str(tmp_path / 'GOT-10k'), '--split', 'val',
                 '--baseline', 'kcf', '--output', str(tmp_path / 'out')]) == 0
    ours = json.loads((tmp_path / 'out' / 'kcf' / 'got10k-val' / 'summary.json').read_text())['kcf']
    # The toolkit reads <result_dir>/GOT-10k/<tracker>/: point it at our folder as written.
    (tmp_path / 'toolkit' / 'GOT-10k').mkdir(parents=True)
    (tmp_path / 'toolkit' / 'GOT-10k' / 'kcf').symlink_to(tmp_path / 'out' / 'kcf' / 'got10k-val')
    experiment = toolkit.ExperimentGOT10k(str(tmp_path / 'GOT-10k'), subset='val',
                                          result_dir=str(tmp_path / 'toolkit'), report_dir=str(tmp_path / 'reports'))
    theirs = experiment.report(['kcf'])['kcf']['overall']
    assert ours['protocol'] == 'got10k'
    assert ours['average_overlap'] == pytest.approx(theirs['ao'], abs=1e-6)
    assert ours['sr50'] == pytest.approx(theirs['sr'], abs=1e-6)
    assert ours['fps'] == pytest.approx(theirs['speed_fps'], rel=1e-6)
    np.testing.assert_allclose(ours['success_curve'], theirs['succ_curve'], atol=1e-6)


@pytest.mark.slow
def test_runner_on_a_lasot_test_sequence_reports_attributes_under_both_protocols(tmp_path: Path, capsys) -> None:
    from stark_training.datasets.lasot import lasot_test_split
    root = tmp_path / 'LaSOT'
    for name in lasot_test_split():  # the reader checks that every test sequence is there
        (root / name.rsplit('-', 1)[0] / name).mkdir(parents=True)
    images, boxes = _synthetic(7, frames=8)
    folder = root / 'airplane' / 'airplane-1'
    for t, image in enumerate(images):
        _write_jpeg(folder / 'img' / f'{t + 1:08d}.jpg', image)
    (folder / 'groundtruth.txt').write_text(formats.boxes_text(boxes))
    (folder / 'full_occlusion.txt').write_text('0,0,0,1,0,0,0,0\n')
    (folder / 'out_of_view.txt').write_text('0,0,0,0,0,0,0,0\n')
    base = ['run', '--dataset', 'lasot', '--root', str(root), '--split', 'test', '--sequences', 'airplane-1',
            '--baseline', 'kcf']
    assert main(base + ['--output', str(tmp_path / 'ope')]) == 0
    assert main(base + ['--output', str(tmp_path / 'pyt'), '--protocol', 'pytracking']) == 0
    ope = (tmp_path / 'ope' / 'kcf' / 'lasot-test' / 'report.md').read_text()
    pyt = (tmp_path / 'pyt' / 'kcf' / 'lasot-test' / 'report.md').read_text()
    assert 'Protocol `ope`' in ope and 'Protocol `pytracking`' in pyt
    assert '| full_occlusion |' in ope and 'out_of_view' not in ope  # no frame is out of view
    assert (tmp_path / 'ope' / 'kcf' / 'lasot-test' / 'airplane-1.txt').is_file()


def test_a_search_factor_reaches_the_tracker_and_the_results_name() -> None:
    from stark_training.evaluation.runner import TrackerSpec, build_tracker

    spec = TrackerSpec(variant='lite', allow_untrained=True, search_factor=3.0)
    assert build_tracker(spec).tracker.config.search_factor == 3.0
    assert spec.display_name() == 'untrained-lite-search3'
    plain = TrackerSpec(variant='lite', allow_untrained=True)
    assert build_tracker(plain).tracker.config.search_factor == 5.0  # lite's own
    assert plain.display_name() == 'untrained-lite'


def test_baselines_run_on_the_threads_asked_for() -> None:
    """--threads holds for OpenCV's trackers too (TrackerNano's DNN used every core before, so its
    FPS column was not one thread's)."""
    import cv2

    from stark_training.evaluation.runner import TrackerSpec, build_tracker

    before = cv2.getNumThreads()
    try:
        for threads in (1, 2):
            build_tracker(TrackerSpec(baseline='kcf', threads=threads))
            assert cv2.getNumThreads() == threads
    finally:
        cv2.setNumThreads(before)
