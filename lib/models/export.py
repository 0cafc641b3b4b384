"""ONNX export of the trained models and ONNX Runtime inference behind the same ``predict`` interface.

Each model's inference -- from the uint8 BGR batch to the image score and the anomaly map at input
size, post-processing included (PatchCore's kNN and reweighting, blurs, MemSeg's top-k mean,
EfficientAD's quantile normalisation) -- is the ``forward`` of its own torch module
(``lib/models/<model>/torch_model.py``), which ``predict`` also runs; export traces that module, so
the exported graph and ``predict`` compute the same thing, which the parity tests check on real crops. Graphs are exported at batch 1 (the line's case); ``OnnxPredictor.predict`` feeds a
batch image by image. The Gaussian baseline (numpy + OpenCV, not a paper model) is not exported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lib.fileio import atomic_path
from lib.models.base import AnomalyModel
from lib.precision import module_precision


def exportable() -> tuple[str, ...]:
    """Registered models whose class says ``exportable`` (a torch ``net`` whose forward is the inference)."""
    from lib.models import REGISTRY

    return tuple(name for name, cls in REGISTRY.items() if cls.exportable)


def inference_module(model: AnomalyModel) -> nn.Module:
    """uint8 (N, H, W, 3) BGR -> (scores (N,), maps (N, H, W)): the model's own torch module in eval mode,
    whose ``forward`` is what ``model.predict`` runs (one inference entry, never re-implemented here)."""
    net = getattr(model, "net", None)
    if not type(model).exportable or not isinstance(net, nn.Module):
        raise ValueError(f"{model.name}: no ONNX export (exportable: {', '.join(exportable())})")
    return net.eval()


def export_onnx(model: AnomalyModel, path, opset: int = 17) -> Path:
    """Write ``model``'s inference graph (batch 1, its input size) to ``path`` (atomically)."""
    import onnx

    w, h = model.input_size
    example = torch.zeros(1, h, w, 3, dtype=torch.uint8)
    module = inference_module(model)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the graph is traced in fp32 (ONNX Runtime's own CPU kernels; bf16 there is not what torch runs)
    with (
        atomic_path(out) as tmp,
        torch.inference_mode(False),
        torch.no_grad(),
        module_precision(module, "fp32"),
    ):
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            input_names=["images"],
            output_names=["scores", "maps"],
            opset_version=opset,
            dynamo=False,
        )
        proto = onnx.load(str(tmp))
        meta = {"model": model.name, "input_size": json.dumps(list(model.input_size))}
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(tmp))
    return out


class OnnxPredictor:
    """An exported model under ONNX Runtime, with ``predict(images) -> (scores, maps)`` like the torch one."""

    backend = "onnxruntime"

    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"ONNX model not found: {p}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{p}: not a loadable ONNX model: {exc}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.name = meta.get("model", "unknown")
        self.input_size = tuple(json.loads(meta["input_size"])) if "input_size" in meta else None
        self.path = p

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if self.input_size and images.shape[1:3] != (self.input_size[1], self.input_size[0]):
            raise ValueError(
                f"{self.path}: images are {images.shape[2]}x{images.shape[1]}, the model takes "
                f"{self.input_size[0]}x{self.input_size[1]}"
            )
        scores, maps = [], []
        for img in images:
            s, m = self.session.run(None, {"images": img[None]})
            scores.append(s)
            maps.append(m)
        return np.concatenate(scores).astype(np.float32), np.concatenate(maps).astype(np.float32)


def predictor(model: AnomalyModel, backend: str = "torch", onnx_path=None, threads: int | None = None):
    """Something with ``predict`` for ``model``: itself (torch) or its ONNX export under ONNX Runtime."""
    if backend == "torch":
        return model
    if backend == "onnxruntime":
        if onnx_path is None:
            import tempfile

            onnx_path = Path(tempfile.mkdtemp(prefix="onnx-")) / f"{model.name}.onnx"
        if not Path(onnx_path).is_file():
            onnx_path = export_onnx(model, onnx_path)
        return OnnxPredictor(onnx_path, threads)
    raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}")


def parity(a: tuple, b: tuple) -> dict:
    """Largest differences between two (scores, maps) pairs, relative to each output's largest magnitude."""
    out = {}
    for name, x, y in (("scores", a[0], b[0]), ("maps", a[1], b[1])):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        out[name] = float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-12))
    return out
