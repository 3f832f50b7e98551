"""Builds trackers off the executor: one background thread, and the newest request wins, so the
node keeps taking frames and answering services while a model loads."""
from __future__ import annotations

import threading
from typing import Any, Callable

Settings = dict[str, Any]


class ModelLoader:
    """Runs `build(settings)` on its own thread and hands the outcome to `done(settings, built,
    problem)` on that thread: `built` is what build returned, or None with `problem` saying why.
    A request made while another is loading replaces any request still waiting."""

    def __init__(self, build: Callable[[Settings], Any], done: Callable[[Settings, Any, str | None], None],
                 describe_failure: Callable[[Settings, Exception], str]) -> None:
        self._build, self._done, self._describe_failure = build, done, describe_failure
        self._condition = threading.Condition()
        self._waiting: Settings | None = None
        self._loading: Settings | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name='stark_model_loader', daemon=True)
        self._thread.start()

    def request(self, settings: Settings) -> None:
        """Load a model for `settings` in the background (replacing a request not yet started)."""
        with self._condition:
            self._waiting = dict(settings)
            self._condition.notify()

    def busy(self) -> Settings | None:
        """The settings of the newest load in progress or waiting; None when idle."""
        with self._condition:
            return self._waiting or self._loading

    def cancel_waiting(self) -> None:
        """Forget a request not yet started (a load in progress still finishes)."""
        with self._condition:
            self._waiting = None

    def close(self, timeout: float = 5.0) -> None:
        with self._condition:
            self._closed, self._waiting = True, None
            self._condition.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._waiting is not None or self._closed)
                if self._closed:
                    return
                self._loading, self._waiting = self._waiting, None
            settings = self._loading
            try:
                built, problem = self._build(settings), None
            except Exception as error:  # any failure is reported; the node keeps its current model
                built, problem = None, self._describe_failure(settings, error)
            try:
                with self._condition:
                    superseded = self._waiting is not None or self._closed
                if not superseded:
                    self._done(settings, built, problem)
            finally:
                with self._condition:
                    self._loading = None
