"""Offline evaluation: metrics as the toolkits compute them, result formats, the benchmark runner
(stark-eval), baselines, plots, reports and rosbag conversion (stark-bag)."""
