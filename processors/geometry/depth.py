"""Monocular depth models of the reference stack (SPEC.md §3), from local checkpoints.

* **Depth Anything V2** (github.com/DepthAnything/Depth-Anything-V2): the architecture
  is written here in plain torch (a DINOv2 ViT encoder and the DPT head), with the
  official module and parameter names (``pretrained.*``, ``depth_head.*``), so the
  official ``depth_anything_v2_{vits,vitb,vitl,vitg}.pth`` state dicts (and the metric
  ``depth_anything_v2_metric_{hypersim,vkitti}_{vits,vitb,vitl}.pth``) load strictly:
  every key and shape must match. Preprocessing and output are the official
  ``infer_image``'s: the shorter side resized (bicubic) to ``input_size`` (518) keeping
  the aspect ratio, both sides multiples of 14 (rounded, at least ``input_size``),
  ImageNet normalisation; the prediction is resized back (bilinear, corners aligned).
  The relative models give affine-invariant **disparity** (inverse depth, unknown scale
  and shift); the metric ones give **depth in metres** (``sigmoid * max_depth``).
* **UniDepth V2** (github.com/lpiccinelli-eth/UniDepth): written in plain torch in
  :mod:`.unidepth` (UniDepth's DINOv2 encoder built on the blocks here, its camera head and
  depth decoder) with the official parameter names; a local Hugging Face snapshot folder
  (``config.json`` + ``model.safetensors``) loads strictly; it gives metric depth and
  intrinsics. ``implementation="package"`` runs the user's own ``unidepth`` installation
  instead (V1 too) through :class:`UniDepth`.

Every model is a :class:`DepthEstimator`: RGB uint8 frames ``(N, H, W, 3)`` in, a
:class:`DepthPrediction` at the frames' resolution out. :func:`align_depth` turns a
prediction into depth in the geometry backend's units by median alignment to the
backend's sparse point depths (SPEC.md §3: "disparity aligned to metric by median
scale/shift"), or leaves it unaligned and says so. Models are built through the
registry (``spatialvid.models``: ``depth-anything-v2-*``, ``unidepth-*``) or
:func:`load_depth_estimator`; nothing is downloaded at run time.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from spatialvid.models import resolve_device

__all__ = [
    "DAV2Config",
    "DAV2_CONFIGS",
    "DepthAnythingV2Net",
    "DepthEstimator",
    "DepthPrediction",
    "DepthAnythingV2",
    "UniDepth",
    "AlignedDepth",
    "align_depth",
    "clip_depth",
    "dense_as_sparse",
    "dav2_input_size",
    "load_dav2_state_dict",
    "build_depth_anything_v2",
    "build_unidepth",
    "load_depth_estimator",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
DepthKind = Literal["disparity", "metric"]


# --------------------------------------------------------------------------- Depth Anything V2
@dataclass(frozen=True)
class DAV2Config:
    """One Depth Anything V2 size: the DINOv2 encoder and the DPT head (official values in
    :data:`DAV2_CONFIGS`; ``dpt.py`` ``intermediate_layer_idx`` and the README's configs)."""

    embed_dim: int
    depth: int
    num_heads: int
    features: int
    out_channels: tuple[int, int, int, int]
    layers: tuple[int, int, int, int]  # blocks whose outputs feed the head
    ffn: Literal["mlp", "swiglu"] = "mlp"
    mlp_ratio: float = 4.0
    patch_size: int = 14
    img_size: int = 518  # pos_embed covers (img_size / patch_size)^2 patches
    max_depth: float | None = None  # metric models: output = sigmoid * max_depth; None: relative


DAV2_CONFIGS: dict[str, DAV2Config] = {
    "vits": DAV2Config(384, 12, 6, 64, (48, 96, 192, 384), (2, 5, 8, 11)),
    "vitb": DAV2Config(768, 12, 12, 128, (96, 192, 384, 768), (2, 5, 8, 11)),
    "vitl": DAV2Config(1024, 24, 16, 256, (256, 512, 1024, 1024), (4, 11, 17, 23)),
    "vitg": DAV2Config(1536, 40, 24, 384, (1536, 1536, 1536, 1536), (9, 19, 29, 39), ffn="swiglu"),
}


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, h*w, D)


class _LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, fused where possible
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _SwiGLU(nn.Module):
    """DINOv2's fused SwiGLU FFN (ViT-g): hidden width ``(int(4 d * 2/3) + 7) // 8 * 8``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class _Block(nn.Module):
    def __init__(self, cfg: DAV2Config) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = _Attention(d, cfg.num_heads)
        self.ls1 = _LayerScale(d)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = (_SwiGLU if cfg.ffn == "swiglu" else _Mlp)(d, int(d * cfg.mlp_ratio))
        self.ls2 = _LayerScale(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _DinoV2(nn.Module):
    """DINOv2 ViT (no register tokens), as Depth Anything V2 builds it (``pretrained``)."""

    def __init__(self, cfg: DAV2Config) -> None:
        super().__init__()
        d, grid = cfg.embed_dim, cfg.img_size // cfg.patch_size
        self.patch_size = cfg.patch_size
        self.patch_embed = _PatchEmbed(d, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, d))
        self.mask_token = nn.Parameter(torch.zeros(1, d))  # training only; in the checkpoints
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)

    def _pos_embed(self, num_patches: int, h: int, w: int) -> torch.Tensor:
        n = self.pos_embed.shape[1] - 1
        if num_patches == n and h == w:
            return self.pos_embed
        pos = self.pos_embed.float()
        side = math.sqrt(n)
        grid = pos[:, 1:].reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
        grid = self._resample(grid, h // self.patch_size, w // self.patch_size, side)
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])
        return torch.cat([pos[:, :1], grid], dim=1).to(self.pos_embed.dtype)

    @staticmethod
    def _resample(grid: torch.Tensor, h0: int, w0: int, side: float) -> torch.Tensor:
        """DINOv2's resampling: bicubic by a scale factor with its 0.1 offset (kept so the
        checkpoints see the positional code they were trained with)."""
        return F.interpolate(grid, scale_factor=((h0 + 0.1) / side, (w0 + 0.1) / side), mode="bicubic",
                             antialias=False)

    def intermediate(self, x: torch.Tensor, layers: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised (patch tokens, class token) after each block in ``layers``."""
        h, w = x.shape[-2:]
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        t = t + self._pos_embed(t.shape[1] - 1, h, w)
        out = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in layers:
                n = self.norm(t)
                out.append((n[:, 1:], n[:, 0]))
        return out


class _ResidualConvUnit(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class _FusionBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(c, c, 1)
        self.resConfUnit1 = _ResidualConvUnit(c)  # noqa: N815  # the official name
        self.resConfUnit2 = _ResidualConvUnit(c)  # noqa: N815

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = (F.interpolate(x, size=size, mode="bilinear", align_corners=True) if size is not None
             else F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
        return self.out_conv(x)


class _DPTHead(nn.Module):
    """The DPT decoder (``depth_head``): four token maps -> one positive map at 14x the patch grid."""

    def __init__(self, cfg: DAV2Config) -> None:
        super().__init__()
        oc, f = cfg.out_channels, cfg.features
        self.projects = nn.ModuleList(nn.Conv2d(cfg.embed_dim, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], 4, stride=4),
            nn.ConvTranspose2d(oc[1], oc[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], 3, stride=2, padding=1),
        ])
        s = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(s, f"layer{i}_rn", nn.Conv2d(c, f, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(s, f"refinenet{i}", _FusionBlock(f))
        s.output_conv1 = nn.Conv2d(f, f // 2, 3, padding=1)
        last: nn.Module = nn.Sigmoid() if cfg.max_depth else nn.ReLU()
        s.output_conv2 = nn.Sequential(nn.Conv2d(f // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 1), last)
        self.scratch = s
        self.patch_size = cfg.patch_size

    def forward(self, feats: list[tuple[torch.Tensor, torch.Tensor]], ph: int, pw: int) -> torch.Tensor:
        maps = []
        for i, (tokens, _cls) in enumerate(feats):
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], ph, pw)
            maps.append(self.resize_layers[i](self.projects[i](x)))
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i + 1}_rn")(m) for i, m in enumerate(maps))
        p = s.refinenet4(l4, size=tuple(l3.shape[2:]))
        p = s.refinenet3(p, l3, size=tuple(l2.shape[2:]))
        p = s.refinenet2(p, l2, size=tuple(l1.shape[2:]))
        p = s.refinenet1(p, l1)
        p = F.interpolate(s.output_conv1(p), (ph * self.patch_size, pw * self.patch_size), mode="bilinear",
                          align_corners=True)
        return s.output_conv2(p)


class DepthAnythingV2Net(nn.Module):
    """Depth Anything V2: ``pretrained`` (DINOv2) + ``depth_head`` (DPT). ``forward`` takes a
    normalised batch ``(B, 3, H, W)`` (sides multiples of 14) and returns ``(B, H, W)``:
    disparity for the relative models, metres for the metric ones."""

    def __init__(self, cfg: DAV2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.pretrained = _DinoV2(cfg)
        self.depth_head = _DPTHead(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = x.shape[-2] // self.cfg.patch_size, x.shape[-1] // self.cfg.patch_size
        out = self.depth_head(self.pretrained.intermediate(x, self.cfg.layers), ph, pw)
        out = out * self.cfg.max_depth if self.cfg.max_depth else F.relu(out)
        return out.squeeze(1)


def dav2_input_size(width: int, height: int, size: int = 518, multiple: int = 14) -> tuple[int, int]:
    """The official resize (``Resize(keep_aspect_ratio, lower_bound, ensure_multiple_of=14)``):
    ``(new_width, new_height)``, the shorter side about ``size``, both multiples of ``multiple``
    (rounded half to even, as numpy does) and at least ``size``."""
    scale = max(size / height, size / width)

    def fit(x: float) -> int:
        y = int(np.round(x / multiple) * multiple)
        return y if y >= size else int(math.ceil(x / multiple) * multiple)

    return fit(scale * width), fit(scale * height)


def load_dav2_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in an official ``.pth`` file (a plain ``{name: tensor}`` dict); raises
    ValueError naming the file when it is not one."""
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and EOF errors alike: the file is not a torch checkpoint
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (the official depth_anything_v2_*.pth), "
                         f"got {type(sd).__name__}")
    return sd


def layout_mismatch(sd: dict[str, torch.Tensor], build: Any) -> str:
    """What differs between a state dict and the network ``build()`` makes (built on the meta
    device: names and shapes only, no memory): missing, unexpected and mis-shaped keys, or ""."""
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    missing = sorted(set(want) - set(sd))
    extra = sorted(set(sd) - set(want))
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {want[k]}" for k in sorted(set(want) & set(sd))
              if tuple(sd[k].shape) != want[k]]
    parts = [f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})" if missing else "",
             f"{len(extra)} unexpected keys (e.g. {', '.join(extra[:3])})" if extra else "",
             f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})" if shapes else ""]
    return "; ".join(p for p in parts if p)


def _check_layout(sd: dict[str, torch.Tensor], cfg: DAV2Config, path: str | Path, label: str) -> None:
    """Every key and shape of the architecture, and nothing else, or a ValueError saying what differs."""
    if differs := layout_mismatch(sd, lambda: DepthAnythingV2Net(cfg)):
        raise ValueError(f"{path} is not a Depth Anything V2 {label} checkpoint: {differs}. "
                         "Use the official file for this model")


# --------------------------------------------------------------------------- the estimator interface
@dataclass
class DepthPrediction:
    """A model's output for ``N`` frames at their resolution.

    ``values``: ``(N, H, W)`` float32; ``kind``: ``"disparity"`` (relative inverse depth,
    unknown scale and shift) or ``"metric"`` (z-depth, metres). ``intrinsics``: ``(N, 4)``
    pixel ``fx, fy, cx, cy`` when the model estimates the camera (UniDepth), else None.
    """

    values: NDArray[np.float32]
    kind: DepthKind
    intrinsics: NDArray[np.float64] | None = None


class DepthEstimator(ABC):
    """A monocular depth model over one clip's frames."""

    name: str
    version: str
    kind: DepthKind  # "disparity" or "metric"

    @abstractmethod
    def predict(self, frames: NDArray[np.uint8]) -> DepthPrediction:
        """Depth (or disparity) of RGB uint8 frames ``(N, H, W, 3)``."""


class DepthAnythingV2(DepthEstimator):
    """Depth Anything V2 (relative disparity, or metric depth for the metric checkpoints)."""

    def __init__(self, net: DepthAnythingV2Net, name: str, version: str, device: str = "auto",
                 input_size: int = 518, batch_size: int = 4) -> None:
        self.device = resolve_device(device, "annotate.device")
        self.net = net.to(self.device).eval()
        self.name, self.version = name, version
        self.kind = "metric" if net.cfg.max_depth else "disparity"
        self.input_size = input_size
        self.batch_size = max(1, batch_size)

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: DAV2Config | str = "vits", *, name: str = "",
                        version: str = "", max_depth: float | None = None, **kwargs: Any) -> "DepthAnythingV2":
        """Load an official state dict strictly (every key and shape must match ``cfg``)."""
        label = cfg if isinstance(cfg, str) else "custom"
        if isinstance(cfg, str):
            if cfg not in DAV2_CONFIGS:
                raise ValueError(f"unknown Depth Anything V2 encoder {cfg!r}; known: {', '.join(DAV2_CONFIGS)}")
            cfg = DAV2_CONFIGS[cfg]
        if max_depth:
            cfg = replace(cfg, max_depth=float(max_depth))
        sd = load_dav2_state_dict(path)
        _check_layout(sd, cfg, path, f"{label}{' metric' if cfg.max_depth else ''}")
        with torch.device("meta"):  # no second copy of the weights: the loaded tensors are assigned
            net = DepthAnythingV2Net(cfg)
        net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
        return cls(net, name or f"depth-anything-v2-{label}", version or f"depth-anything-v2-{label}-{Path(path).name}",
                   **kwargs)

    def preprocess(self, frames: NDArray[np.uint8]) -> torch.Tensor:
        """The official ``image2tensor``: float in [0, 1], bicubic resize, ImageNet normalisation."""
        h, w = frames.shape[1:3]
        size = dav2_input_size(w, h, self.input_size, self.net.cfg.patch_size)
        out = np.stack([cv2.resize(f.astype(np.float64) / 255.0, size, interpolation=cv2.INTER_CUBIC) for f in frames])
        out = ((out - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(out))

    @torch.inference_mode()
    def predict(self, frames: NDArray[np.uint8]) -> DepthPrediction:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: expected (N, H, W, 3) RGB, got {frames.shape}")
        h, w = frames.shape[1:3]
        out = []
        for i in range(0, len(frames), self.batch_size):
            x = self.preprocess(frames[i:i + self.batch_size]).to(self.device)
            y = self.net(x)
            out.append(F.interpolate(y[:, None], (h, w), mode="bilinear", align_corners=True)[:, 0].float().cpu())
        values = torch.cat(out).numpy() if out else np.zeros((0, h, w), np.float32)
        return DepthPrediction(values.astype(np.float32, copy=False), self.kind)


# --------------------------------------------------------------------------- UniDepth (the user's package; the
# in-repo architecture is processors/geometry/unidepth.py)
UNIDEPTH_INSTALL = ("git clone https://github.com/lpiccinelli-eth/UniDepth && pip install -e UniDepth "
                    "(its requirements include xformers and a CUDA build of torch)")


class UniDepth(DepthEstimator):
    """UniDepth V1/V2 through the user's ``unidepth`` package: metric depth and intrinsics.

    The model's own ``infer`` does its preprocessing (padding to its aspect-ratio range,
    resizing to its pixel budget, ImageNet normalisation) and returns depth at the input
    resolution and the estimated ``K``.
    """

    def __init__(self, model: Any, name: str, version: str, device: str = "auto", batch_size: int = 4,
                 resolution_level: int | None = None) -> None:
        self.device = resolve_device(device, "annotate.device")
        self.model = model.to(self.device).eval()
        if resolution_level is not None:  # UniDepth V2: 0..9, the pixel budget within its range
            self.model.resolution_level = int(resolution_level)
        self.name, self.version = name, version
        self.kind = "metric"
        self.batch_size = max(1, batch_size)

    @classmethod
    def from_pretrained(cls, folder: str | Path, variant: str = "v2", **kwargs: Any) -> "UniDepth":
        """Load a local snapshot folder (``config.json`` + ``model.safetensors`` or
        ``pytorch_model.bin``, as on huggingface.co/lpiccinelli) with the package's loader."""
        try:
            from unidepth import models as unidepth_models  # the user's installation
        except ImportError as exc:
            from spatialvid.models import MissingPackage

            raise MissingPackage(f"UniDepth needs the `unidepth` package, which is not installed here: {UNIDEPTH_INSTALL}; "
                                 f"its checkpoint folder (config.json + model.safetensors) goes to {folder}") from exc
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder}: no config.json; expected the UniDepth snapshot folder "
                             "(config.json + model.safetensors from huggingface.co/lpiccinelli/unidepth-...)")
        model_cls = getattr(unidepth_models, {"v1": "UniDepthV1", "v2": "UniDepthV2"}[variant])
        model = model_cls.from_pretrained(str(folder))  # a local folder: read from disk, no hub access
        return cls(model, kwargs.pop("name", f"unidepth-{variant}"),
                   kwargs.pop("version", f"unidepth-{variant}-{folder.name}"), **kwargs)

    @torch.inference_mode()
    def predict(self, frames: NDArray[np.uint8]) -> DepthPrediction:
        return predict_metric(self.model.infer, frames, self.batch_size, self.device)


def predict_metric(infer: Any, frames: NDArray[np.uint8], batch_size: int, device: str) -> DepthPrediction:
    """Metric depth and ``[fx, fy, cx, cy]`` per frame from a UniDepth-style ``infer``
    (uint8-range RGB ``(B, 3, H, W)`` in, its own normalisation; ``depth`` at the input size
    and ``intrinsics (B, 3, 3)`` out), ``batch_size`` frames at a time."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected (N, H, W, 3) RGB, got {frames.shape}")
    h, w = frames.shape[1:3]
    depths, Ks = [], []
    for i in range(0, len(frames), batch_size):
        rgb = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch_size])).permute(0, 3, 1, 2)
        out = infer(rgb.to(device))
        depths.append(out["depth"].reshape(rgb.shape[0], h, w).float().cpu().numpy())
        K = out["intrinsics"].reshape(rgb.shape[0], 3, 3).double().cpu().numpy()
        Ks.append(np.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], axis=1))
    if not depths:
        return DepthPrediction(np.zeros((0, h, w), np.float32), "metric", np.zeros((0, 4)))
    return DepthPrediction(np.concatenate(depths).astype(np.float32), "metric", np.concatenate(Ks))


# --------------------------------------------------------------------------- alignment
@dataclass
class AlignedDepth:
    """Depth ready for the release layout: ``depth (N, H, W)`` z-depth in ``units``;
    ``alignment`` says how it was scaled (recorded with the annotation)."""

    depth: NDArray[np.float32]
    alignment: str
    aligned: bool
    params: dict[str, float] = field(default_factory=dict)


def _sample(values: NDArray[np.float32], uvz: NDArray[np.float64] | None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(prediction, point depth) at the sparse points of one frame (COLMAP pixel coordinates:
    the top-left pixel's centre is at 0.5, 0.5)."""
    if uvz is None or len(uvz) == 0:
        return np.zeros(0), np.zeros(0)
    h, w = values.shape
    u = np.clip(np.floor(uvz[:, 0]).astype(int), 0, w - 1)
    v = np.clip(np.floor(uvz[:, 1]).astype(int), 0, h - 1)
    p, z = values[v, u].astype(np.float64), uvz[:, 2].astype(np.float64)
    ok = np.isfinite(p) & np.isfinite(z) & (p > 0) & (z > 0)
    return p[ok], z[ok]


def _median_scale_shift(pred: NDArray[np.float64], target: NDArray[np.float64]) -> tuple[float, float]:
    """``target ~ s * pred + t`` from medians and mean absolute deviations (MiDaS's robust
    normalisation: the median/scale alignment of the reference)."""
    mp, mt = np.median(pred), np.median(target)
    dp, dt = np.mean(np.abs(pred - mp)), np.mean(np.abs(target - mt))
    s = dt / dp if dp > 0 else 0.0
    return float(s), float(mt - s * mp)


def align_depth(pred: DepthPrediction, sparse: Sequence[NDArray[np.float64] | None] | None,
                min_points: int = 20, units: str = "backend") -> AlignedDepth:
    """Depth in the geometry backend's units from a model prediction and the backend's sparse
    points ``sparse[i] = (K_i, 3)`` rows ``[u, v, z]`` per frame (None: no points).

    Metric depth: one median scale per clip, ``median(z / depth)`` over every point (the
    model is metric in every frame alike). Disparity: per frame, a median scale and shift
    against ``1 / z`` (each frame of a relative model has its own), frames with fewer than
    ``min_points`` points taking the clip's pooled fit; disparities are floored at 0.01
    (depth 100, the release's clip). With too few points in the clip: metric depth stays
    in metres and disparity is left relative (``depth = 1 / disparity``), said in
    ``alignment``.
    """
    v = np.asarray(pred.values, dtype=np.float32)
    n = len(v)
    pairs = [_sample(v[i], sparse[i] if sparse is not None and i < len(sparse) else None) for i in range(n)]
    pooled_p = np.concatenate([p for p, _ in pairs]) if pairs else np.zeros(0)
    pooled_z = np.concatenate([z for _, z in pairs]) if pairs else np.zeros(0)
    with np.errstate(divide="ignore"):
        if len(pooled_z) < min_points:
            if pred.kind == "metric":
                return AlignedDepth(v, "metric, not aligned (metres; no sparse points)", False)
            return AlignedDepth(np.where(v > 0, 1.0 / np.maximum(v, 1e-6), 1e2).astype(np.float32),
                                "relative disparity, not aligned (no sparse points)", False)
        if pred.kind == "metric":
            s = float(np.median(pooled_z / pooled_p))
            return AlignedDepth((v * s).astype(np.float32), f"metric, median scale to {units} depth", True,
                                {"scale": s, "points": float(len(pooled_z))})
        s0, t0 = _median_scale_shift(pooled_p, 1.0 / pooled_z)
        out = np.empty_like(v)
        for i, (p, z) in enumerate(pairs):
            s, t = _median_scale_shift(p, 1.0 / z) if len(z) >= min_points else (s0, t0)
            if s <= 0:
                s, t = s0, t0
            out[i] = 1.0 / np.maximum(s * v[i] + t, 1e-2)
    return AlignedDepth(out.astype(np.float32), f"disparity, per-frame median scale/shift to {units} depth",
                        True, {"scale": s0, "shift": t0, "points": float(len(pooled_z))})


def dense_as_sparse(depth: NDArray[np.float32], width: int, height: int, step: int = 8) -> list[NDArray[np.float64]]:
    """A backend's dense depth ``(N, h, w)`` as sparse ``[u, v, z]`` rows on a grid of every
    ``step``-th pixel, in pixel coordinates of frames ``width x height`` (for
    :func:`align_depth` when a backend gives depth maps, at its own resolution, not points)."""
    n, h, w = depth.shape
    vv, uu = np.mgrid[step // 2:h:step, step // 2:w:step]
    u, v = (uu.ravel() + 0.5) * width / w, (vv.ravel() + 0.5) * height / h
    return [np.column_stack([u, v, d[vv, uu].ravel()]).astype(np.float64) for d in depth]


def clip_depth(model: DepthEstimator, frames: NDArray[np.uint8], res: Any) -> AlignedDepth:
    """Depth of a clip's annotated ``frames`` (those of ``res.frame_indexes``) by ``model``,
    aligned to the geometry backend's result ``res`` (a ``GeometryResult``): to its sparse
    point depths (``extras["sparse_depth"]``) or, failing those, to its dense depth."""
    if len(frames) != res.num_frames:
        raise ValueError(f"{len(frames)} frames for {res.num_frames} annotated frames")
    sparse = res.extras.get("sparse_depth")
    source = f"{res.backend} sparse"
    if sparse is None and res.depth is not None:
        sparse, source = dense_as_sparse(res.depth, frames.shape[2], frames.shape[1]), f"{res.backend} dense"
    return align_depth(model.predict(frames), sparse, units=source)


# --------------------------------------------------------------------------- registry builders
def _registered_version(name: str) -> str:
    """The registry's version string of model ``name`` ("" when it is not registered)."""
    from spatialvid.models import get_model_spec

    try:
        return get_model_spec(name).version if name else ""
    except KeyError:
        return ""


def build_depth_anything_v2(files: dict[str, Path], encoder: str = "vits", max_depth: float | None = None,
                            name: str = "", version: str = "", device: str = "auto", input_size: int = 518,
                            batch_size: int = 4, **_: Any) -> DepthAnythingV2:
    """Registry builder for ``depth-anything-v2-*``: the one declared ``.pth`` file."""
    (path,) = files.values()
    version = version or _registered_version(name)
    return DepthAnythingV2.from_checkpoint(path, encoder, name=name, version=version, max_depth=max_depth,
                                           device=device, input_size=input_size, batch_size=batch_size)


def build_unidepth(files: dict[str, Path], variant: str = "v2", name: str = "", version: str = "",
                   device: str = "auto", batch_size: int = 4, resolution_level: int | None = None,
                   implementation: str = "builtin", **_: Any) -> DepthEstimator:
    """Registry builder for ``unidepth-*``: the snapshot folder holding the declared files.

    ``implementation="builtin"`` (default): the architecture of :mod:`.unidepth`, V2 only;
    ``"package"``: the user's ``unidepth`` installation (V1 or V2)."""
    folder = Path(next(iter(files.values()))).parent
    version = version or _registered_version(name)
    name = name or f"unidepth-{variant}"
    version = version or f"unidepth-{variant}-{folder.name}"
    if implementation == "package":
        return UniDepth.from_pretrained(folder, variant, name=name, version=version, device=device,
                                        batch_size=batch_size, resolution_level=resolution_level)
    if implementation != "builtin":
        raise ValueError(f"UniDepth implementation {implementation!r}: expected 'builtin' or 'package'")
    if variant != "v2":
        raise ValueError(f"UniDepth {variant}: only V2 is reimplemented here; set implementation='package' "
                         f"to run it with the `unidepth` package ({UNIDEPTH_INSTALL})")
    from .unidepth import UniDepthV2

    return UniDepthV2.from_pretrained(folder, name=name, version=version, device=device, batch_size=batch_size,
                                      resolution_level=resolution_level)


def load_depth_estimator(name: str, checkpoint: str = "", weights_dir: str | None = None,
                         device: str = "auto", **options: Any) -> DepthEstimator:
    """The registered depth model ``name``, from ``checkpoint`` (a file, or UniDepth's folder)
    when given, else from the weights folder; errors name the file and how to get it."""
    from spatialvid.models import CorruptWeights, MissingWeights, ModelError, _import, get_model, get_model_spec

    spec = get_model_spec(name)
    if spec.task != "depth":
        raise ValueError(f"{name} is a {spec.task} model, not a depth model")
    opts = {"name": spec.name, "version": spec.version, **spec.options, "device": device, **options}
    if not checkpoint:
        return get_model(name, weights_dir, **opts)
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise MissingWeights(f"depth model {name}: checkpoint {path} does not exist ({spec.weights.source})")
    if path.is_dir():  # a snapshot folder (UniDepth): the declared files by their base names
        files = {f.filename: path / Path(f.filename).name for f in spec.weights.files}
    else:
        files = {spec.weights.files[0].filename: path}
    try:
        return _import(spec.builder)(files, **opts)
    except ModelError:
        raise
    except (ValueError, OSError, RuntimeError) as exc:
        raise CorruptWeights(f"depth model {name}: cannot load {path}: {exc}. Use the official file "
                             f"({spec.weights.source})") from exc
