"""STARK networks, checkpoint IO and the test-time tracker (no ROS needed)."""
