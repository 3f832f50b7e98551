"""A stand-alone InitTarget server for the cross-process test: answers with what it received."""
import sys

import rclpy
from rclpy.node import Node

from stark_ros.srv import InitTarget


def answer(request: InitTarget.Request, response: InitTarget.Response) -> InitTarget.Response:
    response.success = request.width > 0 and request.height > 0
    response.message = (f'box {request.x:g},{request.y:g},{request.width:g},{request.height:g} '
                        f'at {request.stamp.sec}.{request.stamp.nanosec:09d} label={request.label}')
    response.target_id = request.target_id or 'new-1'
    return response


def main() -> None:
    rclpy.init()
    node = Node('init_target_test_server')
    node.create_service(InitTarget, sys.argv[1], answer)
    print('ready', flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    main()
