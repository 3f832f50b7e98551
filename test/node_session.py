"""Helpers shared by the tests that run the installed node over real DDS: frame stamps, an
untrained seeded checkpoint, and starting / stopping a node with a client attached."""
import time
from pathlib import Path

from backend_fixtures import lite_model
from stark_model import save_checkpoint
from stark_ros.driver import NodeClient, NodeError, NodeProcess

BASE_STAMP_NS = 1_700_000_000_000_000_000


def stamp(index: int) -> int:
    """The stamp of frame `index` of a 10 Hz test stream."""
    return BASE_STAMP_NS + index * 100_000_000


def write_lite_checkpoint(folder: Path, seed: int) -> Path:
    """An untrained 'lite' checkpoint with seeded weights: real shapes, no accuracy."""
    model = lite_model(seed)
    return save_checkpoint(folder / 'lite.pth.tar', model.network, model.variant)


def start(parameters: dict, node_kwargs: dict | None = None, ready=None,
          **client_kwargs) -> tuple[NodeProcess, NodeClient]:
    """A node process with these parameters and a client that has seen it come up (by default:
    services offered and our camera publisher matched; `ready(client)` decides otherwise)."""
    node = NodeProcess(parameters, **(node_kwargs or {}))
    peer = NodeClient(node.namespace, **client_kwargs)
    try:
        if ready is None:
            peer.wait_for_node(node=node)
        else:
            peer.wait_until(lambda: ready(peer), 60.0, 'the node to come up', node)
    except Exception:
        peer.close()
        node.stop()
        raise
    return node, peer


def finish(node: NodeProcess, peer: NodeClient) -> None:
    """Close the client and stop the node, asserting that it was alive and exited cleanly."""
    alive = node.alive()
    try:
        peer.close()
    finally:
        code = node.stop()
    assert alive, f'the node died:\n{node.log()}'
    assert code == 0, f'unclean exit:\n{node.log()}'


def show(peer: NodeClient, sequence, index: int, send=None, timeout: float = 30.0,
         node: NodeProcess | None = None):
    """Send frame `index` of `sequence` until the node answers its stamp (best effort may drop a
    sample, the first one after discovery especially); returns the answer. With `node`, a node
    that died ends the wait at once."""
    send = send or (lambda: peer.publish(sequence.frames[index], stamp(index)))
    started = time.monotonic()

    def answered() -> bool:
        return (peer.round_trip(stamp(index))[1] or 0.0) >= started

    while not answered() and time.monotonic() < started + timeout:
        send()
        try:
            peer.wait_until(answered, timeout=1.0, node=node)
        except NodeError:
            if node is not None and not node.alive():
                raise
    assert answered(), f'no result for frame {index} within {timeout} s'
    return peer.detection_for(stamp(index))
