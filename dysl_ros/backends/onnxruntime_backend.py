"""ONNX Runtime segments on the CPU: one InferenceSession per exported segment.

Hidden states stay numpy float32 arrays between segments; the runner picks which sessions run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from dysl_ros.backends.errors import EngineError
from dysl_ros.backends.manifest import Manifest, read_manifest, rebuild_command, verify_segment
from dysl_ros.backends.segments import (
    EMBED,
    HEAD,
    HIDDEN_INPUT,
    adapter_segment,
    controller_segment,
    layer_segment,
)
from dysl_ros.core.runner import FloatArray, ModelInputs

_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self, engine_dir: str | Path, num_threads: int = 0, manifest: Manifest | None = None,
        model_dir: str | Path | None = None,
    ) -> None:
        """Load every segment of ``engine_dir`` (checking each file's sha256 against the manifest).

        ``num_threads`` sets each session's intra-op threads (0: ONNX Runtime's default, one per
        physical core). ``model_dir``: the model being served, named in rebuild commands (default:
        where the manifest says it was built from). The manifest's fit to a model is
        ``manifest.check_manifest``'s job."""
        self.engine_dir = Path(engine_dir)
        self.model_dir = model_dir
        self.manifest = manifest if manifest is not None else read_manifest(self.engine_dir)
        if self.manifest.backend != self.name:
            raise EngineError(f"{self.engine_dir} holds {self.manifest.backend!r} engines, not onnxruntime ones")
        self.num_threads = num_threads
        self.num_layers = int(self.manifest.layer_plan["num_layers"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Each session owns its intra-op pool and segments run back to back: a pool spinning after its
        # segment competes for cores with the next segment's pool. Measured on 2 cores, 24 reference
        # layers, 2 threads: 1116 ms with spinning, 54 ms without (1 thread: 45 vs 48 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions: dict[str, Any] = {name: self._load(name, options) for name in self.manifest.segments}
        self._layers = [self._session(layer_segment(i, self.num_layers)) for i in range(self.num_layers)]
        self._embed = self._session(EMBED)
        self._head = self._session(HEAD)
        # The embed's inputs as exported (one per camera, instruction ids, state), with their types.
        self._embed_inputs = [(i.name, _ONNX_TYPES.get(i.type, np.float32)) for i in self._embed.get_inputs()]

    def _load(self, name: str, options: Any) -> Any:
        file = verify_segment(self.engine_dir, self.manifest, name, self.model_dir)
        try:
            return ort.InferenceSession(str(file), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types for a bad file
            raise EngineError(
                f"ONNX Runtime cannot load segment {name} ({file}): {exc}. Rebuild with: "
                f"{rebuild_command(self.model_dir or self.manifest.model_dir, self.engine_dir, self.name)}"
            ) from exc

    def _session(self, name: str) -> Any:
        session = self.sessions.get(name)
        if session is None:
            raise EngineError(
                f"engines in {self.engine_dir} have no segment {name}"
                + ("" if name.startswith(("layer", EMBED, HEAD)) else ": this model has no DySL modules, run it dense")
            )
        return session

    def embed(self, inputs: ModelInputs) -> FloatArray:
        feed = {name: np.ascontiguousarray(inputs[name], dtype=dtype) for name, dtype in self._embed_inputs}
        return self._run(self._embed, feed)

    def run_layers(self, start: int, stop: int, x: FloatArray) -> FloatArray:
        for session in self._layers[start:stop]:
            x = self._run(session, {HIDDEN_INPUT: x})
        return x

    def adapt(self, layer: int, x: FloatArray) -> FloatArray:
        return self._run(self._session(adapter_segment(layer, self.num_layers)), {HIDDEN_INPUT: x})

    def skip_probability(self, layer: int, x: FloatArray) -> float:
        out = self._run(self._session(controller_segment(layer, self.num_layers)), {HIDDEN_INPUT: x})
        return float(out[0])

    def head(self, x: FloatArray) -> FloatArray:
        return np.asarray(self._run(self._head, {HIDDEN_INPUT: x})[0], dtype=np.float32)

    @staticmethod
    def _run(session: Any, feed: dict[str, Any]) -> FloatArray:
        out: FloatArray = session.run(None, feed)[0]
        return out
