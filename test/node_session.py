"""Helpers shared by the tests that run the installed node over real DDS: frame stamps, an
untrained seeded checkpoint, and starting / stopping a node with a client attached."""
from pathlib import Path

import torch

from stark_model import load_model, save_checkpoint
from stark_ros.driver import NodeClient, NodeProcess

BASE_STAMP_NS = 1_700_000_000_000_000_000


def stamp(index: int) -> int:
    """The stamp of frame `index` of a 10 Hz test stream."""
    return BASE_STAMP_NS + index * 100_000_000


def write_lite_checkpoint(folder: Path, seed: int) -> Path:
    """An untrained 'lite' checkpoint with seeded weights: real shapes, no accuracy."""
    torch.manual_seed(seed)
    model = load_model(variant='lite', allow_untrained=True)
    return save_checkpoint(folder / 'lite.pth.tar', model.network, model.variant)


def start(parameters: dict, node_kwargs: dict | None = None, **client_kwargs) -> tuple[NodeProcess, NodeClient]:
    """A node process with these parameters and a client that has seen it come up."""
    node = NodeProcess(parameters, **(node_kwargs or {}))
    peer = NodeClient(node.namespace, **client_kwargs)
    try:
        peer.wait_for_node(node=node)
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
