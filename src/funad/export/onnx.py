"""A fitted model as one ONNX graph: backbone, scorer, map and label, with its calibration in the metadata.

The graph's input ``image`` is float32 ``[B, 3, S, S]``: the image already resized to the backbone
size S (letterboxed where the metadata's ``keep_aspect`` is true, turned to its object's canonical pose first
where ``align_object`` is) and normalised with the metadata's ``mean`` /
``std`` (:func:`funad.data.preprocessing.normalised_array`), so a runtime needs no torch and preprocessing stays
the one funad uses. Outputs: ``score`` ``[B]``
(float32, the highest patch score), ``anomaly_map`` ``[B, S, S]`` (float32, bilinear then Gaussian,
at the input size) and ``label`` ``[B]`` (bool, score above the threshold).

Everything after the backbone (the *head*) is one torch module exported with ``torch.onnx``: a
torch backbone is exported with it, the ONNX DINOv2 backbone's truncated graph is composed in
front of it with :func:`compose.merge_models`. The knn bank (and its vouched distances) and
the Local-Net's weights become constants of the graph.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
import torch
from onnx import compose, helper
from torch import nn

from funad._version import __version__
from funad.export.metadata import PIXEL_THRESHOLD_KEY, THRESHOLD_KEY, preprocessing_metadata
from funad.features.backbones import Backbone
from funad.features.backbones.onnx_dinov2 import OnnxDinov2Backbone
from funad.inference.maps import patch_scores_to_maps
from funad.inference.scorers.base import PatchScorer
from funad.inference.scorers.knn import CORROBORATION_NEIGHBOURS, NearestNeighbourScorer
from funad.inference.scorers.local_net import LocalNetScorer
from funad.utils.files import write_atomically

if TYPE_CHECKING:
    from funad.model import FunAD

INPUT = "image"
OUTPUTS = ("score", "anomaly_map", "label")
#: Scorers the graph carries (PatchCore, fitted by FunAD without reweighting, as the knn it extends).
EXPORTABLE_SCORERS = ("knn", "local_net", "patchcore")


class CorroboratedDistance(nn.Module):
    """``[B, K, D]`` -> two ``[B, K]``: min over the ``neighbours`` nearest entries e of max(d(q, e), floor[e]),
    with the image scores' floors and with the maps' (:class:`NearestNeighbourScorer`).

    With floors of 0 and one neighbour it is the plain nearest-neighbour distance, so both knn
    variants are this one module. Squared distances as |q|^2 - 2 q.e + |e|^2 (one MatMul),
    clamped at 0 against rounding as faiss's are.
    """

    bank: torch.Tensor  # buffers: constants of the exported graph
    bank_squared_norms: torch.Tensor
    image_floors: torch.Tensor
    map_floors: torch.Tensor

    def __init__(self, bank: torch.Tensor, image_floors: torch.Tensor, map_floors: torch.Tensor, neighbours: int):
        super().__init__()
        self.register_buffer("bank", bank.float().contiguous())
        self.register_buffer("bank_squared_norms", (bank.float() ** 2).sum(dim=1))
        self.register_buffer("image_floors", image_floors.float())
        self.register_buffer("map_floors", map_floors.float())
        self.neighbours = min(neighbours, len(bank))

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        squared = ((patches**2).sum(dim=-1, keepdim=True) - 2 * patches @ self.bank.T
                   + self.bank_squared_norms).clamp_min(0)
        nearest, hits = squared.topk(self.neighbours, dim=-1, largest=False)
        distances = nearest.sqrt()
        return (torch.maximum(distances, self.image_floors[hits]).amin(dim=-1),
                torch.maximum(distances, self.map_floors[hits]).amin(dim=-1))


class LocalNetScore(nn.Module):
    def __init__(self, scorer: LocalNetScorer):
        super().__init__()
        self.local_net = scorer.local_net

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.local_net.score(patches)
        return scores, scores


def patch_score_module(scorer: PatchScorer) -> nn.Module:
    """A fitted scorer as a torch module on method patches, returning the patch scores the image score is
    the highest of and those maps are drawn from; ValueError for a scorer ONNX cannot carry."""
    if isinstance(scorer, LocalNetScorer):
        return LocalNetScore(scorer).float().eval()
    if isinstance(scorer, NearestNeighbourScorer):
        bank = scorer.bank_.patches
        if scorer.corroborated:
            distance = CorroboratedDistance(bank, torch.from_numpy(scorer.floors_),
                                            torch.from_numpy(scorer.map_floors_), CORROBORATION_NEIGHBOURS)
        else:
            distance = CorroboratedDistance(bank, torch.zeros(len(bank)), torch.zeros(len(bank)), 1)
        return distance if scorer.projection_ is None else nn.Sequential(scorer.projection_, distance)
    raise ValueError(f"ONNX export supports the scorers {', '.join(EXPORTABLE_SCORERS)}; this model uses "
                     f"{scorer.name!r}")


class Head(nn.Module):
    """Method patches ``[B, K, D]`` -> (image score, map at the input size, label), as ``funad predict``."""

    def __init__(self, patch_scores: nn.Module, grid: tuple[int, int], input_size: int, sigma: float,
                 threshold: float):
        super().__init__()
        self.patch_scores = patch_scores
        self.grid, self.input_size, self.sigma = grid, input_size, sigma
        # Compared in float64, as FunAD.label does, so a score a hair above the threshold is labelled alike.
        self.register_buffer("threshold", torch.tensor(threshold, dtype=torch.float64))

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_patch_scores, map_patch_scores = self.patch_scores(patches)
        scores = image_patch_scores.float().amax(dim=1)
        maps = patch_scores_to_maps(map_patch_scores.float(), self.grid, self.input_size, self.sigma)
        return scores, maps, scores.double() > self.threshold


class FeaturesThenHead(nn.Module):
    """``features`` (any number of inputs -> method patches), then the head: what is exported from torch."""

    def __init__(self, features: nn.Module, head: Head):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.head(self.features(*inputs))


class TorchBackbonePatches(nn.Module):
    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images).patches


class BlockPatches(nn.Module):
    """The ONNX DINOv2's raw block tokens -> its patch features (LayerNorm, block mean, CLS dropped) in torch."""

    def __init__(self, backbone: OnnxDinov2Backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, *blocks: torch.Tensor) -> torch.Tensor:
        return self.backbone.features_from_blocks(blocks).patches


def export_onnx(model: FunAD, path: str | Path) -> Path:
    """Write ``model`` as one ONNX graph to ``path`` (module docstring); returns the path."""
    if model.config.level != "patch":
        raise ValueError("ONNX export supports patch-level models (level='patch')")
    scorer = model.scorer_  # an unfitted model says so before its backbone is built
    backbone = model.backbone.cpu().eval()
    size = backbone.preprocessing.image_size
    head = Head(patch_score_module(scorer), backbone.grid, size, model.config.map_sigma, model.threshold_).eval()
    if isinstance(backbone, OnnxDinov2Backbone):
        graph = composed_with_onnx_backbone(backbone, head)
    else:
        example = torch.zeros(1, 3, size, size)
        graph = _exported(FeaturesThenHead(TorchBackbonePatches(backbone), head), (example,), [INPUT],
                          opset=17)
    helper.set_model_props(graph, {
        THRESHOLD_KEY: repr(float(model.threshold_)),
        PIXEL_THRESHOLD_KEY: repr(float(model.pixel_threshold_)),
        **preprocessing_metadata(backbone.preprocessing),
        "input": "float32 [B, 3, image_size, image_size]: resized (bilinear) RGB in 0..1, minus mean, over std; "
                 "keep_aspect: letterboxed, the margins the image's mean colour (funad.data.preprocessing); "
                 "align_object: the photo first turned to its object's pose, the map turned back (funad.utils.pose)",
        "funad_version": __version__,
        "scorer": scorer.name,
        "backbone": backbone.name,
        "map_sigma": repr(float(model.config.map_sigma)),
        "map_range": json.dumps(list(model.heatmap_range())),
    })
    onnx.checker.check_model(graph)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The format named: onnx would otherwise infer it from the name of write_atomically's temporary file.
    write_atomically(path, lambda handle: onnx.save(graph, handle, format="protobuf"))
    return path


def _exported(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str],
              opset: int) -> onnx.ModelProto:
    """``module`` as an ONNX model whose batch dimension is free."""
    batch = {0: "batch"}
    # In eval mode before export: the exporter restores the mode it found, and a backbone left
    # training would change funad's own predictions afterwards (batch norm statistics).
    module.eval()
    with tempfile.TemporaryDirectory() as folder, torch.no_grad(), warnings.catch_warnings():
        # The tracer warns of every constant it records (the map's interpolation matrices, the smoothing kernel's
        # size): constants by design, fixed by the model, and a user reads the warnings as a broken export.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        path = Path(folder) / "exported.onnx"
        torch.onnx.export(module, example, path, input_names=input_names, output_names=list(OUTPUTS),
                          dynamic_axes={name: batch for name in [*input_names, *OUTPUTS]}, opset_version=opset,
                          dynamo=False)
        return onnx.load(str(path))


def composed_with_onnx_backbone(backbone: OnnxDinov2Backbone, head: Head) -> onnx.ModelProto:
    """The backbone's truncated graph (its chosen blocks' outputs), then the head exported from torch."""
    blocks_graph = onnx.load_from_string(backbone.truncated_model_bytes)
    tokens = 1 + backbone.num_patches
    examples = tuple(torch.zeros(1, tokens, backbone.embed_dim) for _ in backbone.block_output_names)
    block_inputs = [f"block_{index}" for index in backbone.layers]
    opset = next(entry.version for entry in blocks_graph.opset_import if entry.domain in ("", "ai.onnx"))
    head_graph = _exported(FeaturesThenHead(BlockPatches(backbone), head), examples, block_inputs, opset)
    # merge_models wants one IR version; the newer one reads both graphs.
    blocks_graph.ir_version = head_graph.ir_version = max(blocks_graph.ir_version, head_graph.ir_version)
    merged = compose.merge_models(blocks_graph, head_graph, io_map=list(zip(backbone.block_output_names, block_inputs)),
                                       prefix1="backbone/", outputs=list(OUTPUTS))
    _rename_input(merged.graph, merged.graph.input[0].name, INPUT)
    return merged


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    graph.input[0].name = new
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name == old:
                node.input[position] = new
