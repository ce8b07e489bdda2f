"""The scorer as a PyTorch model, exported to the ONNX the pipeline hot-swaps.

What ``pipeline/hot-swap.ts`` and ``lib/model-holder.ts`` take: input ``features`` float32
``[N, D]`` (D = ``feature_size(features)``, the pipeline's layout; a declared D must match, and a
dry run on one zero row must give a finite score), output ``score`` float32 ``[N, 1]``, and
metadata ``version``. ``export_onnx`` writes it completely (temp file + rename) and returns its
sha256 for the announcement.

    model = LogisticScorer(feature_size(cfg))
    checksum = export_onnx(model, "/models/scorer-torch-1.onnx", version="torch-1")
    client.announce("scorer", "torch-1", "/models/scorer-torch-1.onnx", checksum, {"examples": 512})
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings

import torch

from .checkpoint import write_file_atomic


def device() -> torch.device:
    """``cuda`` when a GPU is there, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class LogisticScorer(torch.nn.Module):
    """sigmoid(w·x + b): the scorer of ``linearModelOnnx`` (output "logistic"), trained here."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(features))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, epochs: int = 1) -> float:
    """``epochs`` full-batch steps of binary cross-entropy on labels in [0, 1]; the last loss."""
    model.train()
    loss = torch.tensor(0.0)
    dev = next(model.parameters()).device
    x, y = x.to(dev), y.to(dev).reshape(-1, 1)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return float(loss.detach().cpu())


def export_onnx(model: torch.nn.Module, path: str, version: str) -> str:
    """Exports ``model`` (one float32 [N, D] input) with ``torch.onnx`` as ``features`` →
    ``score`` with a dynamic batch axis and metadata ``version``, written atomically; returns
    the artifact's sha256 (lowercase hex)."""
    import onnx

    width = _input_width(model)
    was_training = model.training
    model = model.eval().to("cpu")
    example = torch.zeros(2, width, dtype=torch.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=["features"],
            output_names=["score"],
            dynamic_axes={"features": {0: "n"}, "score": {0: "n"}},
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "version", version
    data = proto.SerializeToString()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_file_atomic(path, data)
    if was_training:
        model.train()
    return hashlib.sha256(data).hexdigest()


def _input_width(model: torch.nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            return module.in_features
    raise ValueError("export_onnx: cannot tell the model's input width (no Linear layer); export it yourself")
