"""Training, data and evaluation for STARK models (no ROS needed)."""
