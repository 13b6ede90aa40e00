"""UniDepth V2 (github.com/lpiccinelli-eth/UniDepth, ``unidepth/models/unidepthv2``) in plain torch.

The architecture is written here with the official module and parameter names, so the
``model.safetensors`` of a Hugging Face snapshot (huggingface.co/lpiccinelli/unidepth-v2-vitl14,
-vitb14, -vits14: ``config.json`` + ``model.safetensors``) loads strictly: every key and
shape must match the model that ``config.json`` describes.

* ``pixel_encoder``: UniDepth's DINOv2 ViT/14 (``dinov2_vit{s,b,l}14``): the blocks of
  :mod:`.depth`'s DINOv2, plus the ``register_tokens`` parameter UniDepth always keeps, its
  positional-embedding resampling (bicubic by ``(H/14)/37``, no 0.1 offset), and the final
  norm applied to every block output (``use_norm``). The features of the four stages of
  ``output_idx`` (``stacking_fn = "last"``: the last block of each stage) and their class
  tokens go to the decoder.
* ``pixel_decoder``: the linear adapters (``input_adapter``, ``camera_token_adapter``), the
  camera head (``camera_layer``: two attention blocks over the four class tokens -> pinhole
  ``fx, fy`` as ``exp(.) * 0.7 * diagonal``, ``cx, cy`` as ``sigmoid(.) * W, H``), the rays
  of that camera, and the depth head (``depth_layer``: the four feature maps cross-attend to
  the rays' Fourier embedding, then three residual-conv upsamplers to 8/14 of the input,
  then ``to_depth_lr``/``to_depth_hr`` at the input size). The output is the log radius
  along each ray: ``radius = exp(clip(log, -8, 8) + 2)``, ``points = rays * radius`` and
  the depth is the points' ``z`` (metres).
* Pre- and post-processing are ``UniDepthV2.infer``'s: ImageNet normalisation, zero padding
  to the aspect-ratio range (``ratio_bounds``), bilinear resize to the pixel budget
  (``pixels_min..pixels_max``, narrowed to one tenth by ``resolution_level``) with both sides
  rounded up to multiples of 14; outputs resized back (bilinear) and the padding cropped;
  the intrinsics divided by the resize factor and shifted by the padding. On CUDA it runs
  under float16 autocast as the official ``infer`` does; on CPU in float32.

Not reproduced: training (losses, EMA), V1 and "V2old" (other decoders), and the optional
ground-truth camera input. Which decoder the published weights need was read from the
repository's current ``unidepthv2/decoder.py``; :func:`check_layout` names every key and
shape that differs if a snapshot was saved by another revision.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from spatialvid.models import resolve_device

from .depth import DAV2Config, DepthEstimator, DepthPrediction, _DinoV2, _LayerScale, layout_mismatch, predict_metric

__all__ = [
    "DINOV2_ARCHS",
    "UniDepthV2Config",
    "UniDepthV2Net",
    "UniDepthV2",
    "read_config",
    "load_state_dict",
    "check_layout",
    "unidepth_paddings",
    "unidepth_resize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH = 14
# unidepth/models/backbones/dinov2.py: vit_small / vit_base / vit_large (embed_dim, depth, heads)
DINOV2_ARCHS: dict[str, tuple[int, int, int]] = {
    "dinov2_vits14": (384, 12, 6),
    "dinov2_vitb14": (768, 12, 12),
    "dinov2_vitl14": (1024, 24, 16),
}
_DEFAULT_OUTPUT_IDX = {"dinov2_vits14": (3, 6, 9, 12), "dinov2_vitb14": (3, 6, 9, 12),
                       "dinov2_vitl14": (5, 12, 18, 24)}  # encoder.py's defaults when config omits them


@dataclass(frozen=True)
class UniDepthV2Config:
    """What ``config.json`` fixes about the network and its input shapes (defaults: the
    repository's ``configs/config_v2_vitl14.json``)."""

    encoder: str = "dinov2_vitl14"
    output_idx: tuple[int, ...] = (6, 12, 18, 24)
    use_norm: bool = True
    num_register_tokens: int = 0
    stacking_fn: str = "last"
    hidden_dim: int = 512
    depths: tuple[int, ...] = (2, 2, 2)
    out_dim: int = 64
    kernel_size: int = 3
    num_heads: int = 8
    expansion: int = 4
    layer_scale: float = 1.0
    ratio_bounds: tuple[float, float] = (0.5, 2.5)
    pixels_bounds: tuple[float, float] = (200000, 600000)
    img_size: int = 518  # the DINOv2 positional table covers (518 / 14)^2 patches

    def __post_init__(self) -> None:
        if self.encoder not in DINOV2_ARCHS:
            raise ValueError(f"UniDepth encoder {self.encoder!r} is not reimplemented here; "
                             f"known: {', '.join(DINOV2_ARCHS)}")
        if len(self.output_idx) != 4 or list(self.output_idx) != sorted(set(self.output_idx)) \
                or not 0 < self.output_idx[0] or self.output_idx[-1] > self.encoder_dims[1]:
            raise ValueError(f"output_idx {self.output_idx}: four increasing block counts within "
                             f"1..{self.encoder_dims[1]} expected")
        if not 1 <= len(self.depths) <= 3:
            raise ValueError(f"pixel_decoder depths {self.depths}: one to three stages expected")
        if self.stacking_fn not in ("last", "first"):
            raise ValueError(f"stacking_fn {self.stacking_fn!r}: only 'last' (the published models) and "
                             "'first' are reimplemented")
        if self.hidden_dim % self.num_heads or self.hidden_dim % 2:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be even and divisible by num_heads {self.num_heads}")

    @property
    def encoder_dims(self) -> tuple[int, int, int]:
        """(embed_dim, depth, heads) of the DINOv2 encoder."""
        return DINOV2_ARCHS[self.encoder]

    @classmethod
    def from_json(cls, cfg: dict[str, Any]) -> "UniDepthV2Config":
        """Read the snapshot's ``config.json`` (the repository's config dict, as
        ``PyTorchModelHubMixin`` saves it; a ``{"config": {...}}`` wrapper is accepted too)."""
        if "model" not in cfg and isinstance(cfg.get("config"), dict):
            cfg = cfg["config"]
        try:
            model = cfg["model"]
            enc, dec = model["pixel_encoder"], model["pixel_decoder"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a UniDepth config (no model.pixel_encoder / model.pixel_decoder): {exc}") from exc
        if model.get("name", "UniDepthV2") != "UniDepthV2":
            raise ValueError(f"model.name {model.get('name')!r}: only UniDepthV2 is reimplemented here "
                             "(V1 / V2old: use the unidepth package)")
        data = cfg.get("data", {})
        sc = data.get("augmentations", {}).get("shape_constraints") or data.get("shape_constraints") or {}
        if "pixels_min" in sc:
            pixels = (sc["pixels_min"], sc["pixels_max"])
        else:
            pixels = tuple(sc.get("pixels_bounds", cls.pixels_bounds))
        ratio = sc.get("ratio_bounds", cls.ratio_bounds)
        try:
            name = enc["name"]
            return cls(
                encoder=name,
                output_idx=tuple(int(i) for i in enc.get("output_idx", _DEFAULT_OUTPUT_IDX.get(name, ()))),
                use_norm=bool(enc.get("use_norm", False)),
                num_register_tokens=int(enc.get("num_register_tokens", 0)),
                stacking_fn=enc["stacking_fn"],
                hidden_dim=int(dec["hidden_dim"]),
                depths=tuple(int(d) for d in dec["depths"]),
                out_dim=int(dec["out_dim"]),
                kernel_size=int(dec.get("kernel_size", 7)),
                num_heads=int(model["num_heads"]),
                expansion=int(model["expansion"]),
                layer_scale=float(model["layer_scale"]),
                ratio_bounds=(float(ratio[0]), float(ratio[1])),
                pixels_bounds=(float(pixels[0]), float(pixels[1])),
            )
        except KeyError as exc:
            raise ValueError(f"UniDepth config lacks key {exc}") from exc


# --------------------------------------------------------------------------- encoder
class _Encoder(_DinoV2):
    """UniDepth's ``DinoVisionTransformer`` (``block_chunks=0``, LayerScale, MLP FFN)."""

    def __init__(self, cfg: UniDepthV2Config) -> None:
        d, depth, heads = cfg.encoder_dims
        super().__init__(DAV2Config(d, depth, heads, features=1, out_channels=(1, 1, 1, 1), layers=(0, 0, 0, 0),
                                    img_size=cfg.img_size, patch_size=PATCH))
        self.num_register_tokens = cfg.num_register_tokens
        self.register_tokens = nn.Parameter(torch.zeros(1, max(1, cfg.num_register_tokens), d))
        self.use_norm = cfg.use_norm
        starts = [0, *cfg.output_idx[:-1]]
        # the block (0-based) whose output stands for each stage: stacking "last" or "first"
        self.taps = [e - 1 if cfg.stacking_fn == "last" else s for s, e in zip(starts, cfg.output_idx)]

    @staticmethod
    def _resample(grid: torch.Tensor, h0: int, w0: int, side: float) -> torch.Tensor:
        # UniDepth: scale_factor int(h0 + offset) / sqrt(N), i.e. no offset in effect
        out = F.interpolate(grid, scale_factor=(h0 / side, w0 / side), mode="bicubic", antialias=False)
        if tuple(out.shape[-2:]) != (h0, w0):  # float rounding of the output size: the same map by size
            out = F.interpolate(grid, size=(h0, w0), mode="bicubic", antialias=False)
        return out

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Stage features ``(B, h, w, D)`` and class tokens ``(B, 1, D)``, normalised when ``use_norm``."""
        b, _, H, W = x.shape
        h, w = H // self.patch_size, W // self.patch_size
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(b, -1, -1), t], dim=1)
        t = t + self._pos_embed(t.shape[1] - 1, H, W)
        if self.num_register_tokens:
            t = torch.cat([t[:, :1], self.register_tokens.expand(b, -1, -1), t[:, 1:]], dim=1)
        taps: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks[: max(self.taps) + 1]):
            t = blk(t)
            if i in self.taps:
                taps[i] = self.norm(t) if self.use_norm else t
        outs = [taps[i] for i in self.taps]
        feats = [o[:, 1 + self.num_register_tokens:].reshape(b, h, w, -1) for o in outs]
        return feats, [o[:, :1] for o in outs]


# --------------------------------------------------------------------------- decoder layers
class _MLP(nn.Module):
    """``unidepth.layers.MLP``: LayerNorm -> Linear -> GELU -> Linear."""

    def __init__(self, dim: int, expansion: int = 4, output_dim: int | None = None) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.norm = nn.LayerNorm(dim)
        self.proj1 = nn.Linear(dim, hidden)
        self.proj2 = nn.Linear(hidden, output_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj2(F.gelu(self.proj1(self.norm(x))))


class _AttentionBlock(nn.Module):
    """``unidepth.layers.AttentionBlock``: pre-norm (cross-)attention with the positional code
    added to the queries, then an MLP; LayerScale on both residuals when ``layer_scale > 0``."""

    def __init__(self, dim: int, num_heads: int, expansion: int, layer_scale: float, use_bias: bool,
                 context_dim: int | None = None) -> None:
        super().__init__()
        context_dim = context_dim or dim
        self.num_heads = num_heads
        self.mlp = _MLP(dim, expansion)
        self.kv = nn.Linear(context_dim, dim * 2, bias=use_bias)
        self.q = nn.Linear(dim, dim, bias=use_bias)
        self.norm_attnx = nn.LayerNorm(dim)
        self.norm_attnctx = nn.LayerNorm(context_dim)
        self.out = nn.Linear(dim, dim, bias=use_bias)
        self.ls1: nn.Module = _LayerScale(dim) if layer_scale > 0.0 else nn.Identity()
        self.ls2: nn.Module = _LayerScale(dim) if layer_scale > 0.0 else nn.Identity()

    def attn(self, x: torch.Tensor, context: torch.Tensor, pos_embed: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        hd = c // self.num_heads
        x, context = self.norm_attnx(x), self.norm_attnctx(context)
        # "b n (kv h d) -> b h n d kv"
        k, v = self.kv(context).reshape(b, context.shape[1], 2, self.num_heads, hd).permute(2, 0, 3, 1, 4)
        q = self.q(x).reshape(b, n, self.num_heads, hd).transpose(1, 2)
        if pos_embed is not None:
            q = q + pos_embed.reshape(pos_embed.shape[0], n, self.num_heads, hd).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out(out.transpose(1, 2).reshape(b, n, c))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                pos_embed: torch.Tensor | None = None) -> torch.Tensor:
        x = self.ls1(self.attn(x, x if context is None else context, pos_embed)) + x
        return self.ls2(self.mlp(x)) + x


class _AttentionLayer(nn.Module):
    def __init__(self, num_blocks: int, dim: int, num_heads: int, expansion: int, layer_scale: float,
                 use_bias: bool, context_dim: int | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_AttentionBlock(dim, num_heads, expansion, layer_scale, use_bias, context_dim)
                                    for _ in range(num_blocks))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, context=context)
        return x


class _ResidualConvUnit(nn.Module):
    """``unidepth.layers.upsample.ResidualConvUnit`` (LeakyReLU, two convs, per-channel gamma)."""

    def __init__(self, dim: int, kernel_size: int, layer_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2)
        self.gamma: nn.Parameter | float = (nn.Parameter(layer_scale * torch.ones(1, dim, 1, 1))
                                            if layer_scale > 0.0 else 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x))))
        return self.gamma * out + x


class _ResUpsampleBil(nn.Module):
    def __init__(self, dim: int, output_dim: int, num_layers: int, kernel_size: int, layer_scale: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_ResidualConvUnit(dim, kernel_size, layer_scale) for _ in range(num_layers))
        self.up = nn.Sequential(nn.Conv2d(dim, output_dim, 1),
                                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return self.up(x)


class _ListAdapter(nn.Module):
    def __init__(self, input_dims: Sequence[int], hidden_dim: int) -> None:
        super().__init__()
        self.input_adapters = nn.ModuleList(nn.Linear(d, hidden_dim) for d in input_dims)

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [adapter(x) for adapter, x in zip(self.input_adapters, xs)]


class _CameraHead(nn.Module):
    """``CameraHead``: four class tokens -> pinhole ``fx, fy, cx, cy`` in input pixels."""

    def __init__(self, cfg: UniDepthV2Config) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.aggregate1 = _AttentionBlock(d, cfg.num_heads, cfg.expansion, cfg.layer_scale, use_bias=False)
        self.aggregate2 = _AttentionBlock(d, cfg.num_heads, cfg.expansion, cfg.layer_scale, use_bias=False)
        self.latents_pos = nn.Parameter(torch.zeros(1, 4, d))
        self.project = _MLP(d, expansion=1, output_dim=d)
        self.out_pinhole = _MLP(d, expansion=1, output_dim=1)

    def forward(self, cls_tokens: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        tokens = self.project(cls_tokens)
        pos = self.latents_pos.expand(cls_tokens.shape[0], -1, -1)
        tokens = self.aggregate2(self.aggregate1(tokens, pos_embed=pos), pos_embed=pos)
        fx, fy, cx, cy = self.out_pinhole(tokens).squeeze(-1).unbind(dim=-1)
        H, W = shape
        diagonal = (H**2 + W**2) ** 0.5
        return torch.stack([torch.exp(fx) * 0.7 * diagonal, torch.exp(fy) * 0.7 * diagonal,
                            torch.sigmoid(cx) * W, torch.sigmoid(cy) * H], dim=1)


def _fourier(x: torch.Tensor, dim: int, max_freq: int) -> torch.Tensor:
    """``generate_fourier_features(use_log=True, use_cos=False, cat_orig=False)``."""
    bands = dim // x.shape[-1]
    scales = 2.0 ** torch.linspace(0.0, math.log2(max_freq), steps=bands, device=x.device, dtype=x.dtype)
    return torch.sin(x.unsqueeze(-1) * scales * math.pi).flatten(-2)


class _DepthHead(nn.Module):
    """``DepthHead``: ray-conditioned features -> log radius and log confidence at the input size."""

    def __init__(self, cfg: UniDepthV2Config) -> None:
        super().__init__()
        d, mult = cfg.hidden_dim, 2
        self.hidden_dim = d
        self.to_latents = nn.Linear(d, d)
        self.prompt_camera = nn.ModuleList(
            _AttentionLayer(1, d, cfg.num_heads, cfg.expansion, layer_scale=-1.0, use_bias=False, context_dim=d)
            for _ in range(4))
        self.process_features = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.depth_mlp = nn.ModuleList()
        for i, depth in enumerate(cfg.depths):
            current_dim = min(d, mult * d // int(2**i))
            next_dim = mult * d // int(2 ** (i + 1))
            output_dim = max(next_dim, cfg.out_dim)
            k = max(1, 2 * i)
            self.process_features.append(nn.ConvTranspose2d(d, current_dim, kernel_size=k, stride=k, padding=0))
            self.ups.append(_ResUpsampleBil(current_dim, output_dim, depth, cfg.kernel_size, cfg.layer_scale))
            last = i == len(cfg.depths) - 1
            self.depth_mlp.append(nn.Sequential(nn.LayerNorm(next_dim), nn.Linear(next_dim, output_dim)) if last
                                  else nn.Identity())
        self.confidence_mlp = nn.Sequential(nn.LayerNorm(next_dim), nn.Linear(next_dim, output_dim))
        half = output_dim // 2
        self.to_depth_lr = nn.Conv2d(output_dim, half, 3, padding=1, padding_mode="reflect")
        self.to_confidence_lr = nn.Conv2d(output_dim, half, 3, padding=1, padding_mode="reflect")
        self.to_depth_hr = nn.Sequential(nn.Conv2d(half, 32, 3, padding=1, padding_mode="reflect"), nn.LeakyReLU(),
                                         nn.Conv2d(32, 1, 1))
        self.to_confidence_hr = nn.Sequential(nn.Conv2d(half, 32, 3, padding=1, padding_mode="reflect"),
                                              nn.LeakyReLU(), nn.Conv2d(32, 1, 1))

    def embed_rays(self, rays: torch.Tensor, shape: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
        """Unit rays ``(B, 3, H, W)`` -> their polar/azimuth Fourier code ``(B, h*w, hidden)``."""
        if tuple(shape) != tuple(grid):
            rays = F.interpolate(rays, size=grid, mode="bilinear", align_corners=False, antialias=True)
        r = rays.flatten(2).transpose(1, 2)
        r = r / torch.norm(r, dim=-1, keepdim=True).clip(min=1e-4)
        x, y, z = r.unbind(dim=-1)
        polar = torch.acos(z)
        x_clipped = x.abs().clip(min=1e-3) * (2 * (x >= 0).int() - 1)
        azimuth = torch.atan2(y, x_clipped)
        return _fourier(torch.stack([polar, azimuth], dim=-1), self.hidden_dim, max(grid) // 2)

    def _head(self, feats: torch.Tensor, mlp: nn.Module, lr: nn.Module, hr: nn.Module,
              shape: tuple[int, int]) -> torch.Tensor:
        x = lr(mlp(feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        return hr(F.interpolate(x, size=shape, mode="bilinear", align_corners=True))

    def forward(self, features: list[torch.Tensor], rays: torch.Tensor,
                shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, h, w, _ = features[0].shape
        emb = self.embed_rays(rays, shape, (h, w))
        cond = [prompt(f.reshape(b, h * w, -1), emb) for prompt, f in zip(self.prompt_camera, features)]
        cond = [c.transpose(1, 2).reshape(b, -1, h, w) for c in cond]
        init_latents = self.to_latents(cond[0].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        latents = init_latents
        for i, up in enumerate(self.ups):
            latents = up(latents + self.process_features[i](cond[i + 1]))
        # the depth MLPs before the last are identities whose outputs the official code discards
        logdepth = self._head(latents, self.depth_mlp[-1], self.to_depth_lr, self.to_depth_hr, shape)
        logconf = self._head(latents, self.confidence_mlp, self.to_confidence_lr, self.to_confidence_hr, shape)
        return logdepth, logconf, init_latents


def _pixel_rays(K: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Unit rays ``(B, 3, H, W)`` through the pixel centres: ``K^-1 (u, v, 1)`` (``coords_grid``)."""
    B = K.shape[0]
    xs = torch.linspace(0.5, W - 0.5, W, device=K.device, dtype=K.dtype)
    ys = torch.linspace(0.5, H - 0.5, H, device=K.device, dtype=K.dtype)
    coords = torch.stack([xs.repeat(H, 1), ys.repeat(W, 1).t(), torch.ones(H, W, device=K.device, dtype=K.dtype)])
    K_inv = torch.eye(3, device=K.device, dtype=K.dtype).repeat(B, 1, 1)
    K_inv[:, 0, 0], K_inv[:, 1, 1] = 1.0 / K[:, 0, 0], 1.0 / K[:, 1, 1]
    K_inv[:, 0, 2], K_inv[:, 1, 2] = -K[:, 0, 2] / K[:, 0, 0], -K[:, 1, 2] / K[:, 1, 1]
    rays = (K_inv @ coords.reshape(1, 3, -1)).reshape(B, 3, H, W)
    return rays / torch.norm(rays, dim=1, keepdim=True).clamp(min=1e-5)


class _Decoder(nn.Module):
    def __init__(self, cfg: UniDepthV2Config) -> None:
        super().__init__()
        dims = [cfg.encoder_dims[0]] * len(cfg.output_idx)
        self.input_adapter = _ListAdapter(dims, cfg.hidden_dim)
        self.camera_token_adapter = _ListAdapter(dims, cfg.hidden_dim)
        self.camera_layer = _CameraHead(cfg)
        self.depth_layer = _DepthHead(cfg)
        # in the checkpoints (requires_grad=False); feeds a positional code the camera head ignores
        self.level_embeds = nn.Parameter(torch.zeros(1, 1, len(dims), cfg.hidden_dim), requires_grad=False)

    def forward(self, feats: list[torch.Tensor], cls_tokens: list[torch.Tensor],
                shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        H, W = shape
        features = self.input_adapter(feats)
        tokens = torch.cat(self.camera_token_adapter(cls_tokens), dim=1)
        fx, fy, cx, cy = self.camera_layer(tokens, shape).unbind(dim=1)
        K = torch.zeros(fx.shape[0], 3, 3, device=fx.device, dtype=fx.dtype)
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = fx, fy, cx, cy, 1.0
        rays = _pixel_rays(K, H, W)
        logdepth, logconf, latents = self.depth_layer(features, rays, shape)
        radius = torch.exp(logdepth.clip(min=-8.0, max=8.0) + 2.0)
        points = rays * radius
        return {"intrinsics": K, "rays": rays, "radius": radius, "points": points, "depth": points[:, 2:],
                "confidence": torch.exp(logconf.clip(min=-8.0, max=8.0)), "depth_features": latents}


class UniDepthV2Net(nn.Module):
    """UniDepth V2: ``pixel_encoder`` (DINOv2) + ``pixel_decoder``. ``forward`` takes an
    ImageNet-normalised batch ``(B, 3, H, W)``, sides multiples of 14, and returns the
    official ``encode_decode`` outputs at that size: ``depth (B, 1, H, W)`` (metres),
    ``points``, unit ``rays``, ``radius``, ``confidence`` and ``intrinsics (B, 3, 3)``."""

    def __init__(self, cfg: UniDepthV2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.pixel_encoder = _Encoder(cfg)
        self.pixel_decoder = _Decoder(cfg)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        H, W = x.shape[-2:]
        if H % PATCH or W % PATCH:
            raise ValueError(f"input {H}x{W}: both sides must be multiples of {PATCH}")
        feats, cls_tokens = self.pixel_encoder(x)
        return self.pixel_decoder(feats, cls_tokens, (H, W))


# --------------------------------------------------------------------------- pre/post-processing
def unidepth_paddings(shape: tuple[int, int], ratio_bounds: Sequence[float]) -> tuple[tuple[int, int, int, int],
                                                                                     tuple[int, int]]:
    """``get_paddings``: ``(left, right, top, bottom)`` zero padding that brings ``W / H`` into
    ``ratio_bounds``, and the padded ``(H, W)``."""
    H, W = shape
    ratio = W / H
    target = min(ratio_bounds[1], max(ratio_bounds[0], ratio))
    if ratio > target:  # too wide: pad top and bottom
        Hn = int(W / target)
        top = (Hn - H) // 2
        return (0, 0, top, Hn - H - top), (Hn, W)
    Wn = int(H * target)
    left = (Wn - W) // 2
    return (left, Wn - W - left, 0, 0), (H, Wn)


def unidepth_resize(shape: tuple[int, int], pixels_bounds: Sequence[float],
                    multiple: int = PATCH) -> tuple[float, tuple[int, int]]:
    """``get_resize_factor``: the scale that brings the pixel count into ``pixels_bounds``, and
    the network's ``(H, W)``: the scaled sides truncated, then rounded up to ``multiple``."""
    H, W = shape
    target = min(pixels_bounds[1], max(pixels_bounds[0], W * H))
    factor = (target / (W * H)) ** 0.5
    return factor, (math.ceil(int(H * factor) / multiple) * multiple, math.ceil(int(W * factor) / multiple) * multiple)


def pixel_budget(cfg: UniDepthV2Config, resolution_level: int | None) -> tuple[float, float]:
    """The pixel range ``infer`` uses: the config's, or its ``resolution_level``-th tenth (0..9)."""
    lo, hi = cfg.pixels_bounds
    if resolution_level is None:
        return lo, hi
    if not 0 <= resolution_level < 10:
        raise ValueError(f"resolution_level {resolution_level}: expected 0..9")
    step = (hi - lo) / 10
    return lo + resolution_level * step, lo + (resolution_level + 1) * step


# --------------------------------------------------------------------------- loading
def read_config(folder: str | Path) -> tuple[dict[str, Any], UniDepthV2Config]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no config.json; expected the UniDepth snapshot folder "
                         "(config.json + model.safetensors from huggingface.co/lpiccinelli/unidepth-v2-...)")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    try:
        return raw, UniDepthV2Config.from_json(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def weights_file(folder: str | Path) -> Path:
    """``model.safetensors`` (what the Hub snapshots hold), else an older ``pytorch_model.bin``."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (p := Path(folder) / name).is_file():
            return p
    raise ValueError(f"{folder}: no model.safetensors (or pytorch_model.bin) next to config.json")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (or a ``.bin`` state dict); ValueError naming the file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            from spatialvid.models import MissingPackage

            raise MissingPackage(f"reading {path} needs the `safetensors` package: "
                                 'pip install safetensors (or "spatialvid-stream[models]")') from exc
        try:
            sd = load_file(str(path), device="cpu")
        except Exception as exc:  # SafetensorError, OSError, header JSON errors alike
            raise ValueError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
        if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
            sd = sd["model"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a non-empty state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def check_layout(sd: dict[str, torch.Tensor], cfg: UniDepthV2Config, path: str | Path) -> None:
    """Every key and shape of the architecture, and nothing else, or a ValueError saying what differs."""
    if differs := layout_mismatch(sd, lambda: UniDepthV2Net(cfg)):
        raise ValueError(f"{path} does not match the UniDepth V2 {cfg.encoder} model its config.json describes: "
                         f"{differs}. Use the official snapshot (config.json and model.safetensors of one repository)")


# --------------------------------------------------------------------------- the estimator
class UniDepthV2(DepthEstimator):
    """UniDepth V2 from a local snapshot folder: metric z-depth (metres) and pinhole intrinsics."""

    def __init__(self, net: UniDepthV2Net, name: str, version: str, device: str = "auto", batch_size: int = 4,
                 resolution_level: int | None = None) -> None:
        self.device = resolve_device(device, "annotate.device")
        self.net = net.to(self.device).eval()
        self.name, self.version = name, version
        self.kind = "metric"
        self.batch_size = max(1, batch_size)
        self.resolution_level = resolution_level
        pixel_budget(net.cfg, resolution_level)  # validates the level

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, name: str = "", version: str = "",
                        **kwargs: Any) -> "UniDepthV2":
        """Load ``config.json`` + ``model.safetensors`` strictly (every key and shape must match)."""
        folder = Path(folder)
        _, cfg = read_config(folder)
        path = weights_file(folder)
        sd = load_state_dict(path)
        check_layout(sd, cfg, path)
        with torch.device("meta"):  # the loaded tensors are assigned: no second copy of the weights
            net = UniDepthV2Net(cfg)
        net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
        return cls(net, name or f"unidepth-v2-{cfg.encoder.removeprefix('dinov2_')}",
                   version or f"unidepth-v2-{folder.name}", **kwargs)

    def infer(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """The official ``infer`` on a uint8-range RGB batch ``(B, 3, H, W)``: ``depth (B, 1, H, W)``,
        ``points``, ``confidence``, unit ``rays`` at the input size and ``intrinsics (B, 3, 3)``."""
        B, _, H, W = rgb.shape
        cfg = self.net.cfg
        (pl, pr, pt, pb), (pH, pW) = unidepth_paddings((H, W), cfg.ratio_bounds)
        factor, (nH, nW) = unidepth_resize((pH, pW), pixel_budget(cfg, self.resolution_level))
        mean = torch.tensor(IMAGENET_MEAN, device=rgb.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=rgb.device).view(1, 3, 1, 1)
        x = (rgb.float() / 255.0 - mean) / std
        x = F.pad(x, (pl, pr, pt, pb), value=0.0)
        x = F.interpolate(x, size=(nH, nW), mode="bilinear", align_corners=False)
        amp = torch.autocast("cuda", dtype=torch.float16) if x.is_cuda else contextlib.nullcontext()
        with amp:  # the official infer runs under float16 autocast on CUDA
            out = self.net(x)

        def back(t: torch.Tensor) -> torch.Tensor:
            t = F.interpolate(t.float(), size=(pH, pW), mode="bilinear", align_corners=False)
            return t[..., pt:pH - pb, pl:pW - pr]

        points, rays = back(out["points"]), back(out["rays"])
        K = out["intrinsics"].float().clone()
        K[:, 0, 0] /= factor
        K[:, 1, 1] /= factor
        K[:, 0, 2] = K[:, 0, 2] / factor - pl
        K[:, 1, 2] = K[:, 1, 2] / factor - pt
        return {"depth": points[:, -1:], "points": points, "confidence": back(out["confidence"]),
                "rays": rays / torch.norm(rays, dim=1, keepdim=True).clip(min=1e-5), "intrinsics": K}

    @torch.inference_mode()
    def predict(self, frames: NDArray[np.uint8]) -> DepthPrediction:
        return predict_metric(self.infer, frames, self.batch_size, self.device)
