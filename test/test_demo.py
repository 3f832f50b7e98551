"""make demo's program on the real clip: the node follows the chosen pedestrian through the whole
25.5 s it plays (checked against boxes labelled by hand at 15 moments), answers nearly every frame,
and writes the annotated video, per-frame CSV and summary."""
import csv
import os
import subprocess
import sys

import cv2
import pytest

from stark_ros.demo import VTEST, VTEST_START, VTEST_TARGET

# The man in the maroon-and-navy puffer jacket (VTEST_TARGET on frame VTEST_START = 540), labelled by
# eye on zoomed frames of vtest.avi (no tracker involved), about +-3 px on the centre and +-4 px on the
# size: video frame -> (centre x, centre y, width, height). Frames 560 and 700 are partly hidden
# (a woman in front of him; his legs behind the sign board).
LABELLED_BOXES = {
    544: (231, 447, 72, 136), 560: (192, 421, 36, 136), 580: (254, 402, 47, 131), 600: (480, 360, 51, 115),
    620: (598, 314, 39, 104), 640: (661, 258, 37, 92), 660: (631, 218, 30, 83), 680: (525, 193, 26, 71),
    690: (460, 190, 29, 71), 700: (415, 189, 22, 71), 720: (316, 204, 28, 74), 740: (284, 237, 31, 81),
    760: (261, 281, 42, 91), 780: (370, 314, 41, 103), 794: (462, 326, 50, 103),
}
# The tracked box's centre must lie in his labelled box widened by this share of its size and 12 px on
# each side, plus his walk (at most 6 px a frame) for answered frames up to 2 frames from the label.
MARGIN = 0.25
WALK_PX = 6


def _on_him(row: dict, label: tuple[int, int, int, int], frames_away: int = 0) -> bool:
    cx, cy, w, h = label
    x, y, bw, bh = (float(row[k]) for k in ('x', 'y', 'w', 'h'))
    slack = 12 + WALK_PX * frames_away
    half_w, half_h = w * (0.5 + MARGIN) + slack, h * (0.5 + MARGIN) + slack
    return abs(x + bw / 2 - cx) <= half_w and abs(y + bh / 2 - cy) <= half_h


@pytest.mark.slow
def test_demo_follows_the_pedestrian_through_the_whole_clip(tmp_path):
    if not VTEST.is_file():
        if os.environ.get('CI') == 'true':
            pytest.fail(f'{VTEST} is missing, and CI=true requires it (make setup installs opencv-doc)')
        pytest.skip(f'{VTEST} is absent (Debian package opencv-doc)')
    result = subprocess.run([sys.executable, '-m', 'stark_ros.demo', '--out-dir', str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'stark_ros demo summary' in result.stdout and 'default model' in result.stdout

    with open(tmp_path / 'tracks.csv') as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 795 - VTEST_START and rows[0]['state'] == 'INIT'
    answered = [row for row in rows[1:] if row['x']]
    # The node skips to the newest frame when busy; on a quiet 2-core machine it answers them all.
    assert len(answered) >= 0.8 * (len(rows) - 1), f'the node answered only {len(answered)} frames'
    width, height = 768, 576
    for row in answered:
        x, y, w, h = (float(row[k]) for k in ('x', 'y', 'w', 'h'))
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and w > 0 and h > 0
        assert float(row['latency_ms']) > 0 and row['state'] in ('TRACKING', 'LOST')
    assert any(abs(float(row['x']) - VTEST_TARGET[0]) > 2 for row in answered), 'the box never moved'
    checked = 0
    for frame, label in LABELLED_BOXES.items():
        near = [r for r in answered if abs(int(r['frame']) + VTEST_START - frame) <= 2]
        for row in near:
            assert _on_him(row, label, abs(int(row['frame']) + VTEST_START - frame)), (f'frame {int(row["frame"]) + VTEST_START}: the box {row["x"]}, '
                                         f'{row["y"]}, {row["w"]}, {row["h"]} is off the pedestrian {label}')
        checked += bool(near)
    assert checked >= 12, f'only {checked} of the {len(LABELLED_BOXES)} labelled moments had an answered frame'

    video = cv2.VideoCapture(str(tmp_path / 'demo.mp4'))
    assert video.isOpened() and int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == len(rows)
    summary = (tmp_path / 'summary.txt').read_text()
    assert 'latency' in summary and 'time tracked' in summary
    assert 'answered frames by state: TRACKING' in summary and 'score: range' in summary


@pytest.mark.slow
def test_demo_without_the_footage_says_so_and_plays_a_synthetic_clip(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'stark_ros.demo', '--video', str(tmp_path / 'missing.avi'),
                             '--frames', '15', '--targets', '1', '--out-dir', str(tmp_path)],
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f'The demo footage {tmp_path / "missing.avi"} is missing' in result.stdout
    assert 'opencv-doc' in result.stdout and 'target-0: mean IoU' in result.stdout
    with open(tmp_path / 'tracks.csv') as file:
        assert len(list(csv.DictReader(file))) == 15
