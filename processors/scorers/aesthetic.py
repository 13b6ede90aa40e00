"""Aesthetic score, the paper's model (SPEC.md §2): CLIP ViT-L/14 + the LAION MLP.

Per frame: CLIP's preprocessing (bicubic resize of the short side to 224, centre crop
224x224, CLIP mean/std), the ViT-L/14 image embedding (768-d), L2-normalised, into the
LAION "improved aesthetic predictor" MLP 768 -> 1024 -> 128 -> 64 -> 16 -> 1 (linear
layers with dropout between them, no activations: ``sac+logos+ava1-l14-linearMSE.pth``).
A clip's score is the mean over its sampled frames; keep when >= 4.0.

Official formats read here, from the weights folder:

* ``ViT-L-14.pt``: OpenAI's release, a TorchScript archive of the whole CLIP model
  (fp16). A plain ``torch.save`` state dict with the same key names (``visual.*``, as
  OpenAI's ``clip.load(jit=False)`` and open_clip's ``openai`` weights use) also loads.
  The vision tower's shape is read from the tensors as OpenAI's ``build_model`` does, so
  a small model saved in the same format loads too (the tests do that).
* ``sac+logos+ava1-l14-linearMSE.pth``: a ``torch.save`` state dict with keys
  ``layers.{0,2,4,6,7}.{weight,bias}``.

The module imports torch at the top; nothing imports it unless this backend is chosen
(the registry imports the builder lazily), so the core install does not need torch.
On CUDA the ViT runs in half precision (LayerNorm in float32, as OpenAI's model does);
the normalisation and the MLP run in float32 everywhere.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from spatialvid.models import resolve_device

from .ocr import bucket, bucket_sizes, capture_cuda_graph, stack_batch
from .resample import clip_crop_batch

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
CLIP_FILE = "ViT-L-14.pt"
MLP_FILE = "sac+logos+ava1-l14-linearMSE.pth"


# -- the architectures (OpenAI CLIP ``model.py`` names, so state dicts load as released) --
class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (as OpenAI's CLIP does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        # batch_first only changes the layout, not the parameter names; it lets PyTorch
        # use its fused inference path.
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """CLIP's image tower. ViT-L/14: resolution 224, patch 14, width 1024, 24 layers,
    16 heads, output 768."""

    def __init__(self, input_resolution: int = 224, patch_size: int = 14, width: int = 1024, layers: int = 24,
                 heads: int = 16, output_dim: int = 768) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # N, grid*grid, width
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0, :]) @ self.proj


class AestheticMLP(nn.Module):
    """The LAION improved aesthetic predictor head (``layers`` indices as released)."""

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


# -- loading the official formats -----------------------------------------------------
def read_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``visual.*`` tensors of a CLIP checkpoint: a TorchScript archive (OpenAI's
    release) or a plain state dict (``clip.load(jit=False)`` / open_clip layout)."""
    path = Path(path)
    try:
        sd = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:  # not a TorchScript archive: a state dict saved with torch.save
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} holds a {type(sd).__name__}, not a CLIP state dict")
    visual = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    if "conv1.weight" not in visual:
        raise ValueError(f"{path} has no CLIP vision tower (no 'visual.conv1.weight'); is it a CLIP ViT checkpoint?")
    return visual


def vit_config(visual: dict[str, torch.Tensor]) -> dict[str, int]:
    """The tower's shape from its tensors (as OpenAI's ``build_model`` reads it)."""
    width, _, patch, _ = visual["conv1.weight"].shape
    layers = len([k for k in visual if k.endswith(".attn.in_proj_weight")])
    grid = round((visual["positional_embedding"].shape[0] - 1) ** 0.5)
    return {"input_resolution": patch * grid, "patch_size": patch, "width": width, "layers": layers,
            "heads": width // 64, "output_dim": visual["proj"].shape[1]}


def load_vit(path: str | Path) -> VisionTransformer:
    visual = read_clip_state_dict(path)
    model = VisionTransformer(**vit_config(visual))
    model.load_state_dict({k: v.float() for k, v in visual.items()}, strict=True)
    return model.eval()


def load_mlp(path: str | Path, input_size: int | None = None) -> AestheticMLP:
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or "layers.0.weight" not in sd:
        raise ValueError(f"{path} is not the LAION aesthetic MLP state dict (no 'layers.0.weight')")
    mlp = AestheticMLP(input_size or sd["layers.0.weight"].shape[1])
    mlp.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return mlp.eval()


# -- preprocessing (CPU, runs on the decode threads) --------------------------------------
def clip_preprocess(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """torchvision's CLIP transform on one RGB uint8 frame -> float32 3 x size x size.

    Resize(size, BICUBIC) on a PIL image (short side to ``size``, long side truncated as
    torchvision does), CenterCrop(size), ToTensor, Normalize(CLIP mean, std).
    """
    crop = clip_crop(rgb, size).astype(np.float32) / 255.0
    return ((crop - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1).copy()


def clip_crop(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """CLIP's resize and centre crop, uint8 size x size x 3 (the CUDA path's input: the
    same ``ToTensor``/``Normalize`` arithmetic then runs on the device)."""
    h, w = rgb.shape[:2]
    if w > h:
        # Landscape: PIL resamples horizontally, then vertically, each pass on its own; so
        # run the horizontal pass alone, crop, and run the vertical pass on the kept
        # columns only (bit-identical to resize-then-crop, tested; 1.5x faster at 640x360).
        new_w = int(size * w / h)
        left = int(round((new_w - size) / 2.0))
        img = Image.fromarray(rgb).resize((new_w, h), Image.BICUBIC)
        return np.asarray(img.crop((left, 0, left + size, h)).resize((size, size), Image.BICUBIC))
    new_w, new_h = size, int(size * h / w)
    img = Image.fromarray(rgb).resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.ascontiguousarray(np.asarray(img)[top:top + size, left:left + size])


class LaionAesthetic:
    """The paper's aesthetic scorer, batched over frames of many clips."""

    model_id = "laion-aesthetic-vit-l14"
    is_proxy = False
    reduce = "mean"

    def __init__(self, vit: VisionTransformer, mlp: AestheticMLP, version: str, device: str = "auto",
                 half: bool = True, batch_size: int = 32, stage_uint8: bool | None = None,
                 graphs: bool = True) -> None:
        self.device = resolve_device(device)
        cuda = self.device.startswith("cuda")
        self.dtype = torch.float16 if half and cuda else torch.float32
        self.vit = vit.to(self.device, self.dtype).eval()
        for m in self.vit.modules():  # as OpenAI's convert_weights: LayerNorm stays float32
            if isinstance(m, nn.LayerNorm):
                m.float()
        self.mlp = mlp.to(self.device, torch.float32).eval()
        self.version = version + ("-fp16" if self.dtype == torch.float16 else "")
        self.batch_size = batch_size
        self.resolution = vit.input_resolution
        # uint8 crops travel and are normalised on the device (on CUDA by default); the
        # arithmetic is clip_preprocess's, so the network input is the same either way
        self.stage_uint8 = cuda if stage_uint8 is None else stage_uint8
        self.graphs = graphs and cuda
        self._compiled: dict[int, tuple[Any, Any, Any]] = {}
        self._255 = torch.tensor(255.0, device=self.device)  # a tensor: IEEE division, as numpy
        self._mean = torch.from_numpy(CLIP_MEAN.reshape(1, 3, 1, 1)).to(self.device)
        self._std = torch.from_numpy(CLIP_STD.reshape(1, 3, 1, 1)).to(self.device)

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        return clip_crop(rgb, self.resolution) if self.stage_uint8 else clip_preprocess(rgb, self.resolution)

    def preparer(self) -> Callable[[np.ndarray], np.ndarray]:
        """:meth:`prepare` as a small picklable function (for decode worker processes)."""
        return partial(clip_crop if self.stage_uint8 else clip_preprocess, size=self.resolution)

    def prepare_device(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`prepare` of a batch of RGB frames already on the device (N x H x W x 3
        uint8): the same crops (``resample.clip_crop_batch``, PIL's bytes), one per frame."""
        return list(clip_crop_batch(frames, self.resolution))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """A batch as prepared (uint8 N x S x S x 3, or float32 N x 3 x S x S) -> the ViT's input."""
        if x.dtype == torch.uint8:
            x = (x.permute(0, 3, 1, 2).to(torch.float32) / self._255 - self._mean) / self._std
        return x.to(self.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score per row: ViT, L2 normalisation (float32), the MLP (float32)."""
        emb = F.normalize(self.vit(self._input(x)).float(), p=2, dim=-1)
        return self.mlp(emb).squeeze(-1)

    def _runner(self, example: torch.Tensor) -> tuple[Any, Any, Any]:
        """(CUDA graph or None, static input, static output) for one padded batch shape."""
        key = tuple(example.shape), example.dtype
        if key in self._compiled:
            return self._compiled[key]
        static_in = torch.zeros_like(example, device=self.device)
        entry: tuple[Any, Any, Any] = (None, static_in, None)
        if self.graphs:
            captured = capture_cuda_graph(self._forward, static_in, "aesthetic")
            if captured is None:
                self.graphs = False
            else:
                entry = (captured[0], static_in, captured[1])
        self._compiled[key] = entry
        return entry

    @torch.inference_mode()
    def embed(self, prepared: Sequence[np.ndarray]) -> torch.Tensor:
        """L2-normalised image embeddings, float32, one row per prepared frame."""
        out = []
        for i in range(0, len(prepared), self.batch_size):
            x = stack_batch(prepared[i:i + self.batch_size], pin=False)
            out.append(F.normalize(self.vit(self._input(x)).float(), p=2, dim=-1))
        return torch.cat(out)

    def warmup(self, example: np.ndarray) -> None:
        """Run (capture) every padded batch shape once (CUDA only), so the stream never waits on it."""
        if self.device.startswith("cuda"):
            for b in bucket_sizes(self.batch_size):
                self.score([example] * b)

    def score(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        """Aesthetic score per prepared frame (float64 array)."""
        return self.launch(prepared)()

    @torch.inference_mode()
    def launch(self, prepared: Sequence[np.ndarray]) -> Callable[[], np.ndarray]:
        """Enqueues the model calls; returns the function that waits for the scores.

        On CUDA nothing here waits for the GPU: the caller can stage the next model's
        input while the ViT runs (the stage launches the OCR detector in between). The
        values are those of one :meth:`score` call.
        """
        if not prepared:
            return lambda: np.empty(0)
        if not self.device.startswith("cuda"):
            values = self.mlp(self.embed(prepared)).squeeze(-1).double().cpu().numpy()
            return lambda: values
        # CUDA: padded batch shapes, each a captured graph (ViT, normalisation, MLP in one replay)
        out = []
        for i in range(0, len(prepared), self.batch_size):
            x = stack_batch(prepared[i:i + self.batch_size])
            n = len(x)
            graph, static_in, static_out = self._runner(x.new_empty((bucket(n, self.batch_size), *x.shape[1:])))
            static_in[:n].copy_(x, non_blocking=True)
            if graph is not None:
                graph.replay()
            else:
                static_out = self._forward(static_in)
            out.append(static_out[:n].double())  # a copy, in stream order: the next replay may reuse the buffer

        def collect() -> np.ndarray:
            with torch.inference_mode():
                return torch.cat(out).cpu().numpy()

        return collect

    @staticmethod
    def verdict(value: float, filters: Any) -> tuple[bool, str]:
        """Keep when the mean score >= ``filters.aesthetic_min`` (paper: 4.0)."""
        if value < filters.aesthetic_min:
            return False, f"aesthetic {value:.2f} < {filters.aesthetic_min:g}"
        return True, ""


def build_laion(files: dict[str, Path], version: str = "", device: str = "auto", half: bool = True,
                batch_size: int = 32, **_: Any) -> LaionAesthetic:
    """Registry builder for ``laion-aesthetic-vit-l14``."""
    from spatialvid.models import get_model_spec

    vit = load_vit(files[CLIP_FILE])
    mlp = load_mlp(files[MLP_FILE])
    if mlp.layers[0].in_features != vit.proj.shape[1]:
        raise ValueError(f"the MLP expects {mlp.layers[0].in_features}-d embeddings, the CLIP tower gives "
                         f"{vit.proj.shape[1]}-d: the two files do not belong together")
    return LaionAesthetic(vit, mlp, version or get_model_spec("laion-aesthetic-vit-l14").version, device, half,
                          batch_size)
