"""``python -m reidgen.export ckpt=... format=onnx``: the network that describes an image, for use
outside reidgen (``conf/export.yaml``).

What is exported is :class:`FeatureNetwork`: ``images [B, 3, H, W]`` (normalised as the checkpoint's
test transform does it) -> the method's test features, one output per part, named as the parts
(``embedding`` ``[B, D]``; AlignedReID with the global + local distance adds ``stripes``
``[B, h, c]``; QAConv: ``maps`` ``[B, D, h, w]``), with a dynamic batch size. The distance that
compares them stays in reidgen (QAConv's matcher, AlignedReID's shortest path):
docs/getting-started.md says how to compute it outside.

``format=onnx`` writes ``<out>.onnx`` (the tracing exporter, opset 18) and checks it
with onnxruntime on a batch of random images of two sizes: every output must equal PyTorch's within
``tolerance``, or the file is not kept. ``format=torchscript`` writes ``<out>.pt``
(``torch.jit.trace``), checked the same way. Nothing is overwritten.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from reidgen.atomic import write_atomically
from reidgen.methods.base import ReIDMethod
from reidgen.run_support import load_method

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
OPSET = 18


class FeatureNetwork(nn.Module):
    """``method.extract`` as a plain module: ``[B, 3, H, W] -> tuple`` of the feature parts, in
    the order of :attr:`names`.

    :param method: a reidgen method in eval mode (its submodules are shared, not copied).
    :param names: the part names, from one call of ``method.extract``.
    """

    def __init__(self, method: ReIDMethod, names: tuple[str, ...]) -> None:
        super().__init__()
        # The method's networks are this module's children (so the exporters find their
        # weights), the method itself is not: tracing reads every submodule's attributes, and a
        # LightningModule's raise outside a Trainer.
        self.networks = nn.ModuleDict(dict(method.named_children()))
        object.__setattr__(self, "method", method)
        self.names = names

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        features = self.method.extract(images)
        return tuple(features[name] for name in self.names)


def image_size(method: ReIDMethod) -> tuple[int, int]:
    """``(height, width)`` of the checkpoint's test images."""
    stored = method.hparams.get("test_transform") or {}
    if "height" not in stored or "width" not in stored:
        raise ValueError(
            "the checkpoint does not record its test image size (hyper-parameter "
            "test_transform.height / width); give it with input_size=[H,W]"
        )
    return int(stored["height"]), int(stored["width"])


def feature_network(method: ReIDMethod, size: tuple[int, int]) -> FeatureNetwork:
    """The method's :class:`FeatureNetwork`, in eval mode on the CPU."""
    method = method.cpu().eval()
    with torch.no_grad():
        names = tuple(method.extract(torch.zeros(2, 3, *size)).names)
    return FeatureNetwork(method, names).eval()


def output_path(out: str | Path, file_format: str) -> Path:
    if file_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {file_format!r}")
    out = Path(out)
    return out.with_name(out.name + FORMATS[file_format])


def run_exported(path: Path, images: Tensor) -> list[np.ndarray]:
    """The exported file's outputs for ``images`` (onnxruntime on the CPU, or TorchScript)."""
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation note
        module = torch.jit.load(str(path))
    with torch.no_grad():
        return [t.numpy() for t in module(images)]


def largest_difference(
    network: FeatureNetwork, path: Path, size: tuple[int, int], seed: int = 0
) -> float:
    """The largest absolute difference between the exported file's outputs and PyTorch's, over
    random batches of 3 and 1 images (the batch size must be dynamic)."""
    generator = torch.Generator().manual_seed(seed)
    largest = 0.0
    for batch in (3, 1):
        images = torch.randn(batch, 3, *size, generator=generator)
        with torch.no_grad():
            expected = network(images)
        got = run_exported(path, images)
        if len(got) != len(expected):
            raise ValueError(f"{path} gives {len(got)} outputs, PyTorch {len(expected)}")
        for name, want, have in zip(network.names, expected, got, strict=True):
            if tuple(have.shape) != tuple(want.shape):
                raise ValueError(
                    f"{path}: output {name!r} has shape {tuple(have.shape)} for a batch of "
                    f"{batch}, PyTorch {tuple(want.shape)}"
                )
            largest = max(largest, float(np.abs(have - want.numpy()).max()))
    return largest


def export_network(
    network: FeatureNetwork, path: Path, size: tuple[int, int], file_format: str
) -> None:
    """Writes ``network`` to ``path`` (which must not exist) as ONNX or TorchScript."""
    example = torch.zeros(2, 3, *size)

    def write(temporary: Path) -> None:
        with warnings.catch_warnings():
            # Notes about the exporters themselves (TorchScript is deprecated in this torch;
            # the tracer's note on reidgen's shape check, a constant by design), not the user's.
            for category in (torch.jit.TracerWarning, FutureWarning, DeprecationWarning):
                warnings.simplefilter("ignore", category)
            if file_format == "onnx":
                torch.onnx.export(
                    network,
                    (example,),
                    str(temporary),
                    dynamo=False,
                    input_names=["images"],
                    output_names=list(network.names),
                    dynamic_axes={name: {0: "batch"} for name in ("images", *network.names)},
                    opset_version=OPSET,
                )
            else:
                with torch.no_grad():
                    traced = torch.jit.trace(network, example, check_trace=False)
                traced.save(str(temporary))

    write_atomically(path, write, overwrite=False)


def export_from_config(cfg: DictConfig) -> Path:
    """The CLI without Hydra's wrapper (keys: ``conf/export.yaml``)."""
    path = output_path(cfg.out, cfg.format)
    if path.exists():
        raise FileExistsError(f"not overwriting {path}: choose another out=... or remove it")
    overrides = OmegaConf.to_container(cfg.method_overrides, resolve=True)
    method = load_method(cfg.ckpt, overrides=overrides)
    size = tuple(cfg.input_size) if cfg.input_size else image_size(method)
    network = feature_network(method, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_network(network, path, size, cfg.format)
    difference = largest_difference(network, path, size)
    if difference > cfg.tolerance:
        path.unlink()
        raise ValueError(
            f"the exported {cfg.format} network differs from PyTorch's by up to {difference:.2e} "
            f"(tolerance {cfg.tolerance}); nothing was kept"
        )
    outputs = ", ".join(network.names)
    print(
        f"{path}: images [B, 3, {size[0]}, {size[1]}] -> {outputs}; largest difference from "
        f"PyTorch {difference:.1e}"
    )
    return path


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="export")
def main(cfg: DictConfig) -> None:
    export_from_config(cfg)


if __name__ == "__main__":
    main()
