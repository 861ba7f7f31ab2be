"""Errors of the backends: engines that cannot be used, and backends this machine cannot run."""

from __future__ import annotations


class EngineError(RuntimeError):
    """Engines are missing, stale, from another model or damaged; the message says which and how to
    rebuild them."""


class BackendUnavailable(EngineError):
    """This machine cannot build or run a backend (e.g. no TensorRT or no CUDA GPU)."""

    def __init__(self, backend: str, problems: list[str], advice: str = "") -> None:
        self.backend = backend
        self.problems = problems
        message = f"backend {backend} is not available on this machine: {'; '.join(problems)}"
        super().__init__(message + (f". {advice}" if advice else ""))


class TorchNeeded(BackendUnavailable):
    """Engines must be exported from the model's weights, and torch, which exports them, is not
    installed here (a robot's runtime install); the message names the ``build_engines`` command to
    run on a machine with torch."""

    def __init__(self, backend: str, message: str) -> None:
        self.backend = backend
        self.problems = ["torch is not installed"]
        EngineError.__init__(self, message)
