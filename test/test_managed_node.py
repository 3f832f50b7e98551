"""The lifecycle (managed) form of the tracker node, driven through the standard lifecycle services
(ChangeState / GetState) as a Nav2-style lifecycle manager does, on the installed executable."""
import time
from pathlib import Path

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from stark_ros.driver import NodeClient, NodeProcess
from stark_training.synthetic import make_sequence

from node_session import stamp, write_lite_checkpoint

pytestmark = pytest.mark.slow




@pytest.fixture(scope='module')
def lite_checkpoint(tmp_path_factory) -> Path:
    return write_lite_checkpoint(tmp_path_factory.mktemp('model'), seed=11)


class Lifecycle:
    """Clients of the node's lifecycle services."""

    def __init__(self, peer: NodeClient) -> None:
        self.peer = peer
        self.change = peer.node.create_client(ChangeState, 'stark_tracker/change_state')
        self.get = peer.node.create_client(GetState, 'stark_tracker/get_state')

    def state(self) -> str:
        return self.peer.call(self.get, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition_id
        return self.peer.call(self.change, request, timeout=120).success


def answered_frame(peer: NodeClient, sequence, index: int, timeout: float = 30.0) -> bool:
    """Publish frame `index` until its detections come back (False after `timeout`)."""
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        peer.publish(sequence.frames[index], stamp(index))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if (peer.round_trip(stamp(index))[1] or 0.0) >= started:
                return True
            time.sleep(0.02)
    return False


def test_managed_node_follows_the_lifecycle(lite_checkpoint):
    sequence = make_sequence(num_frames=6, width=160, height=120, num_targets=1, seed=2, target_size=30)
    missing = lite_checkpoint.parent / 'missing.pth.tar'
    node = NodeProcess({'model.checkpoint': str(missing), 'model.device': 'cpu', 'model.cpu_threads': 1,
                        'tracking.lost_threshold': 0.0}, executable='managed_tracker_node')
    peer = NodeClient(node.namespace)
    try:
        lifecycle = Lifecycle(peer)
        peer.wait_until(lambda: lifecycle.change.service_is_ready() and lifecycle.get.service_is_ready(),
                        timeout=60, what='the lifecycle services', node=node)
        assert lifecycle.state() == 'unconfigured'
        assert 'STARK lite' not in node.log(), 'no model before configure'
        assert peer.camera.get_subscription_count() == 0 and not peer.init_client.service_is_ready()

        assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE), 'missing checkpoint: configure fails'
        assert lifecycle.state() == 'unconfigured'
        # The node's log reaches us through a pipe: wait for the line rather than race it.
        peer.wait_until(lambda: f'configure failed: cannot load model {missing}' in node.log(), timeout=20,
                        what='the configure failure in the log', node=node)
        assert 'does not exist' in node.log()
        assert peer.set_parameter('model.checkpoint', str(lite_checkpoint)).successful
        assert 'STARK lite' not in node.log(), 'an unconfigured node loads nothing'

        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == 'inactive'
        assert 'STARK lite from' in node.log(), 'configure loads the model'
        assert peer.camera.get_subscription_count() == 0, 'inactive: no camera subscription'

        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert lifecycle.state() == 'active'
        peer.wait_for_node(node=node)
        assert answered_frame(peer, sequence, 0)
        started = peer.init_target(sequence.boxes[0][0], stamp(0), target_id='managed')
        assert started.success, started.message
        assert answered_frame(peer, sequence, 1)
        assert [d.id for d in peer.detection_for(stamp(1)).detections] == ['managed']

        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.state() == 'inactive'
        peer.wait_until(lambda: peer.camera.get_subscription_count() == 0 and not peer.init_client.service_is_ready(),
                        timeout=20, what='the camera subscription and services gone', node=node)
        assert not answered_frame(peer, sequence, 2, timeout=2.0), 'an inactive node publishes nothing'

        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        peer.wait_for_node(node=node)
        assert answered_frame(peer, sequence, 3)
        assert [d.id for d in peer.detection_for(stamp(3)).detections] == ['managed'], 'targets survive a pause'

        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
        assert lifecycle.state() == 'unconfigured'
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE), 'configure works again after cleanup'
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        peer.wait_for_node(node=node)
        assert answered_frame(peer, sequence, 4)
        assert peer.detection_for(stamp(4)).detections == [], 'cleanup dropped the targets'

        shutdown = ChangeState.Request()
        shutdown.transition.id = Transition.TRANSITION_ACTIVE_SHUTDOWN
        assert peer.call(lifecycle.change, shutdown).success
        assert lifecycle.state() == 'finalized'
        assert node.alive()
    finally:
        peer.close()
        code = node.stop()
    assert code == 0, node.log()
    assert 'Traceback' not in node.log()

