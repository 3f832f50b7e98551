"""Publishes one fully populated Detection2DArray until stopped (the cross-process test's sender)."""
import sys

import rclpy
from rclpy.node import Node
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose


def sample_message() -> Detection2DArray:
    """A message with every field set to a distinct value."""
    msg = Detection2DArray()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000000, 123456789
    msg.header.frame_id = 'camera_optical'
    for index in range(2):
        det = Detection2D()
        det.header = msg.header
        det.id = f'target-{index}'
        det.bbox.center.position.x = 100.25 + index
        det.bbox.center.position.y = 50.5 + index
        det.bbox.center.theta = 0.125
        det.bbox.size_x, det.bbox.size_y = 40.0 + index, 30.0 + index
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = f'label-{index}'
        hypothesis.hypothesis.score = 0.75 - index / 10
        hypothesis.pose.pose.position.x = 1.5
        hypothesis.pose.pose.orientation.w = 1.0
        hypothesis.pose.covariance[0] = 0.01 * (index + 1)
        det.results.append(hypothesis)
        msg.detections.append(det)
    return msg


def main() -> None:
    rclpy.init()
    node = Node('detection_test_publisher')
    publisher = node.create_publisher(Detection2DArray, sys.argv[1], 10)
    message = sample_message()
    node.create_timer(0.05, lambda: publisher.publish(message))
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    main()
