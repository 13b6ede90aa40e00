"""UniDepth V2 in plain torch (processors/geometry/unidepth.py): tiny snapshots with random
weights saved in the official layout (config.json + model.safetensors) load strictly and
match an independent reading of the official code; the real ViT-L/14 and ViT-S/14 layouts
are checked key by key on the meta device; bad snapshots fail with what is wrong."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
import torch.nn.functional as F  # noqa: E402

from spatialvid.models import CorruptWeights, MissingWeights, get_model  # noqa: E402
from spatialvid.processors.geometry import unidepth as ud  # noqa: E402
from spatialvid.processors.geometry.depth import load_depth_estimator  # noqa: E402

# configs/config_v2_vitl14.json of the repository (the sections the model reads; training omitted)
VITL14_CONFIG: dict[str, Any] = {
    "generic": {"seed": 13, "deterministic": True},
    "data": {"image_shape": [480, 640], "normalization": "imagenet",
             "augmentations": {"shape_constraints": {"ratio_bounds": [0.5, 2.5], "pixels_max": 600000,
                                                     "pixels_min": 200000, "height_min": 15, "width_min": 15,
                                                     "shape_mult": 14, "sample": True}}},
    "model": {"name": "UniDepthV2", "num_heads": 8, "expansion": 4, "layer_scale": 1.0,
              "pixel_decoder": {"name": "Decoder", "hidden_dim": 512, "dropout": 0.0, "depths": [2, 2, 2],
                                "out_dim": 64, "kernel_size": 3},
              "pixel_encoder": {"lr": 2e-06, "wd": 0.1, "name": "dinov2_vitl14", "frozen_stages": 0,
                                "num_register_tokens": 0, "use_norm": True, "freeze_norm": True,
                                "pretrained": None, "stacking_fn": "last", "output_idx": [6, 12, 18, 24]}},
}


def tiny_config() -> dict[str, Any]:
    """The official layout with a made-up 4-block, 32-wide DINOv2 and a small pixel budget."""
    cfg = copy.deepcopy(VITL14_CONFIG)
    cfg["model"].update(num_heads=4)
    cfg["model"]["pixel_encoder"].update(name="dinov2_test14", output_idx=[1, 2, 3, 4])
    cfg["model"]["pixel_decoder"].update(hidden_dim=32, depths=[2, 1, 1], out_dim=8)
    cfg["data"]["augmentations"]["shape_constraints"].update(pixels_min=1200, pixels_max=2000)
    return cfg


@pytest.fixture(autouse=True)
def tiny_encoder(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setitem(ud.DINOV2_ARCHS, "dinov2_test14", (32, 4, 2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only wait on each other (seconds on a busy machine)
    yield
    torch.set_num_threads(threads)


def random_state_dict(cfg: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = ud.UniDepthV2Net(ud.UniDepthV2Config.from_json(cfg))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2 if p.ndim > 1 else 0.1)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def save_snapshot(folder: Path, cfg: dict[str, Any], sd: dict[str, torch.Tensor]) -> Path:
    """What ``PyTorchModelHubMixin.save_pretrained`` writes: config.json and model.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    safetensors_torch.save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def frames(n: int, h: int = 30, w: int = 60, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- the reference
def _ln(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, eps: float = 1e-5) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)


def _lin(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.linear(x, sd[p + ".weight"], sd.get(p + ".bias"))


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1], n, -1).permute(0, 2, 1, 3)


def _mlp(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return _lin(F.gelu(_lin(_ln(x, sd, p + ".norm"), sd, p + ".proj1")), sd, p + ".proj2")


def _attention_block(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, heads: int,
                     context: torch.Tensor | None = None, pos: torch.Tensor | None = None) -> torch.Tensor:
    ctx = x if context is None else context
    xn, cn = _ln(x, sd, p + ".norm_attnx"), _ln(ctx, sd, p + ".norm_attnctx")
    kv = _lin(cn, sd, p + ".kv")
    dim = x.shape[-1]
    k, v = _heads(kv[..., :dim], heads), _heads(kv[..., dim:], heads)  # "(kv h d)": k first
    q = _heads(_lin(xn, sd, p + ".q"), heads)
    if pos is not None:
        q = q + _heads(pos, heads)
    a = _softmax_attention(q, k, v).permute(0, 2, 1, 3).reshape(x.shape)
    a = _lin(a, sd, p + ".out")
    if p + ".ls1.gamma" in sd:
        a = a * sd[p + ".ls1.gamma"]
    x = x + a
    m = _mlp(x, sd, p + ".mlp")
    if p + ".ls2.gamma" in sd:
        m = m * sd[p + ".ls2.gamma"]
    return x + m


def reference_infer(sd: dict[str, torch.Tensor], cfg: dict[str, Any], rgb: np.ndarray,
                    dims: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A straight reading of UniDepthV2.infer / encode_decode / Decoder over the state dict."""
    model, sc = cfg["model"], cfg["data"]["augmentations"]["shape_constraints"]
    enc, dec = model["pixel_encoder"], model["pixel_decoder"]
    embed, n_blocks, enc_heads = dims
    heads, hidden = model["num_heads"], dec["hidden_dim"]
    B, H, W = rgb.shape[:3]
    # get_paddings
    lo, hi = sc["ratio_bounds"]
    ratio = W / H
    target = min(hi, max(lo, ratio))
    if ratio > target:
        pH, pW = int(W / target), W
        pt, pl = (pH - H) // 2, 0
    else:
        pH, pW = H, int(H * target)
        pt, pl = 0, (pW - W) // 2
    pb, pr = pH - H - pt, pW - W - pl
    # get_resize_factor
    tp = min(sc["pixels_max"], max(sc["pixels_min"], pH * pW))
    s = (tp / (pH * pW)) ** 0.5
    nH, nW = math.ceil(int(pH * s) / 14) * 14, math.ceil(int(pW * s) / 14) * 14
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    x = F.pad(x, (pl, pr, pt, pb))
    x = F.interpolate(x, size=(nH, nW), mode="bilinear", align_corners=False)

    # encoder: DINOv2 with every block output normalised, the last of each stage kept
    e = {k.removeprefix("pixel_encoder."): v for k, v in sd.items() if k.startswith("pixel_encoder.")}
    h, w = nH // 14, nW // 14
    t = F.conv2d(x, e["patch_embed.proj.weight"], e["patch_embed.proj.bias"], stride=14).flatten(2).transpose(1, 2)
    t = torch.cat([e["cls_token"].expand(B, -1, -1), t], 1)
    side = int(math.sqrt(e["pos_embed"].shape[1] - 1))
    grid = e["pos_embed"][:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    t = t + torch.cat([e["pos_embed"][:, :1], grid.flatten(2).transpose(1, 2)], 1)
    outs = []
    for i in range(n_blocks):
        p = f"blocks.{i}"
        qkv = _lin(F.layer_norm(t, (embed,), e[p + ".norm1.weight"], e[p + ".norm1.bias"], 1e-6), e, p + ".attn.qkv")
        q, k, v = (_heads(c, enc_heads) for c in qkv.chunk(3, dim=-1))
        a = _softmax_attention(q, k, v).permute(0, 2, 1, 3).reshape(t.shape)
        t = t + _lin(a, e, p + ".attn.proj") * e[p + ".ls1.gamma"]
        m = _lin(F.gelu(_lin(F.layer_norm(t, (embed,), e[p + ".norm2.weight"], e[p + ".norm2.bias"], 1e-6),
                             e, p + ".mlp.fc1")), e, p + ".mlp.fc2")
        t = t + m * e[p + ".ls2.gamma"]
        outs.append(F.layer_norm(t, (embed,), e["norm.weight"], e["norm.bias"], 1e-6))
    stages = [outs[j - 1] for j in enc["output_idx"]]
    feats = [o[:, 1:].reshape(B, h, w, embed) for o in stages]
    cls = [o[:, :1] for o in stages]

    d = {k.removeprefix("pixel_decoder."): v for k, v in sd.items() if k.startswith("pixel_decoder.")}
    feats = [_lin(f, d, f"input_adapter.input_adapters.{i}") for i, f in enumerate(feats)]
    tok = torch.cat([_lin(c, d, f"camera_token_adapter.input_adapters.{i}") for i, c in enumerate(cls)], 1)
    # CameraHead
    tok = _mlp(tok, d, "camera_layer.project")
    pos = d["camera_layer.latents_pos"].expand(B, -1, -1)
    tok = _attention_block(tok, d, "camera_layer.aggregate1", heads, pos=pos)
    tok = _attention_block(tok, d, "camera_layer.aggregate2", heads, pos=pos)
    raw = _mlp(tok, d, "camera_layer.out_pinhole").squeeze(-1)
    diag = (nH**2 + nW**2) ** 0.5
    fx, fy = torch.exp(raw[:, 0]) * 0.7 * diag, torch.exp(raw[:, 1]) * 0.7 * diag
    cx, cy = torch.sigmoid(raw[:, 2]) * nW, torch.sigmoid(raw[:, 3]) * nH
    K = torch.zeros(B, 3, 3)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = fx, fy, cx, cy, 1
    gy, gx = torch.meshgrid(torch.arange(nH) + 0.5, torch.arange(nW) + 0.5, indexing="ij")
    pix = torch.stack([gx, gy, torch.ones_like(gx)]).reshape(3, -1).float()
    rays = torch.linalg.inv(K) @ pix  # (B, 3, nH*nW)
    rays = rays / rays.norm(dim=1, keepdim=True)
    # DepthHead.embed_rays (flat_interpolate + spherical angles + log-spaced sines)
    r = F.interpolate(rays.reshape(B, 3, nH, nW), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    r = r.flatten(2).transpose(1, 2)
    r = r / r.norm(dim=-1, keepdim=True).clip(min=1e-4)
    polar = torch.acos(r[..., 2])
    xs = r[..., 0].abs().clip(min=1e-3) * torch.where(r[..., 0] >= 0, 1.0, -1.0)
    ang = torch.stack([polar, torch.atan2(r[..., 1], xs)], -1)
    freqs = 2.0 ** torch.linspace(0.0, math.log2(max(h, w) // 2), hidden // 2)
    emb = torch.sin(ang[..., None] * freqs * math.pi).reshape(B, h * w, hidden)
    cond = [_attention_block(f.reshape(B, h * w, hidden), d, f"depth_layer.prompt_camera.{i}.layers.0", heads,
                             context=emb) for i, f in enumerate(feats)]
    cond = [c.transpose(1, 2).reshape(B, hidden, h, w) for c in cond]
    lat = _lin(cond[0].permute(0, 2, 3, 1), d, "depth_layer.to_latents").permute(0, 3, 1, 2)
    for i, n_layers in enumerate(dec["depths"]):
        k = max(1, 2 * i)
        lat = lat + F.conv_transpose2d(cond[i + 1], d[f"depth_layer.process_features.{i}.weight"],
                                       d[f"depth_layer.process_features.{i}.bias"], stride=k)
        for j in range(n_layers):
            p = f"depth_layer.ups.{i}.convs.{j}"
            o = F.conv2d(F.leaky_relu(lat), d[p + ".conv1.weight"], d[p + ".conv1.bias"], padding=1)
            o = F.conv2d(F.leaky_relu(o), d[p + ".conv2.weight"], d[p + ".conv2.bias"], padding=1)
            lat = d[p + ".gamma"] * o + lat
        lat = F.conv2d(lat, d[f"depth_layer.ups.{i}.up.0.weight"], d[f"depth_layer.ups.{i}.up.0.bias"])
        lat = F.interpolate(lat, scale_factor=2, mode="bilinear", align_corners=False)
    last = len(dec["depths"]) - 1
    f = lat.permute(0, 2, 3, 1)
    f = _lin(_ln(f, d, f"depth_layer.depth_mlp.{last}.0"), d, f"depth_layer.depth_mlp.{last}.1").permute(0, 3, 1, 2)
    f = F.conv2d(F.pad(f, (1, 1, 1, 1), mode="reflect"), d["depth_layer.to_depth_lr.weight"],
                 d["depth_layer.to_depth_lr.bias"])
    f = F.interpolate(f, size=(nH, nW), mode="bilinear", align_corners=True)
    f = F.leaky_relu(F.conv2d(F.pad(f, (1, 1, 1, 1), mode="reflect"), d["depth_layer.to_depth_hr.0.weight"],
                              d["depth_layer.to_depth_hr.0.bias"]))
    logdepth = F.conv2d(f, d["depth_layer.to_depth_hr.2.weight"], d["depth_layer.to_depth_hr.2.bias"])
    points = rays.reshape(B, 3, nH, nW) * torch.exp(logdepth.clip(-8, 8) + 2.0)
    # _postprocess and _postprocess_intrinsics
    points = F.interpolate(points, size=(pH, pW), mode="bilinear", align_corners=False)[:, :, pt:pH - pb, pl:pW - pr]
    K[:, :2, :] /= s
    K[:, 0, 2] -= pl
    K[:, 1, 2] -= pt
    K[:, 2, :] = torch.tensor([0.0, 0.0, 1.0])
    return points[:, 2].numpy(), K.numpy()


# ----------------------------------------------------------------------------- tests
def test_tiny_snapshot_matches_the_reference_forward(tmp_path: Path) -> None:
    cfg = tiny_config()
    sd = random_state_dict(cfg)
    folder = save_snapshot(tmp_path / "tiny", cfg, sd)
    model = ud.UniDepthV2.from_pretrained(folder, device="cpu", batch_size=4)
    assert model.kind == "metric" and model.net.cfg.encoder == "dinov2_test14"
    for shape in ((30, 60), (48, 20)):  # within bounds: no resize; narrow (ratio 0.42): padded, then resized
        clip = frames(2, *shape)
        pred = model.predict(clip)
        ref_depth, ref_K = reference_infer(sd, cfg, clip, (32, 4, 2))
        assert pred.values.shape == (2, *shape) and pred.values.dtype == np.float32
        np.testing.assert_allclose(pred.values, ref_depth, rtol=1e-4, atol=1e-4)
        assert pred.intrinsics is not None
        np.testing.assert_allclose(pred.intrinsics, ref_K[:, [0, 1, 0, 1], [0, 1, 2, 2]], rtol=1e-4, atol=1e-4)
        assert (pred.values > 0).all()


def test_batch_size_does_not_change_the_output(tmp_path: Path) -> None:
    cfg = tiny_config()
    folder = save_snapshot(tmp_path / "tiny", cfg, random_state_dict(cfg, seed=3))
    clip = frames(3, seed=5)
    one = ud.UniDepthV2.from_pretrained(folder, device="cpu", batch_size=1).predict(clip)
    three = ud.UniDepthV2.from_pretrained(folder, device="cpu", batch_size=3).predict(clip)
    np.testing.assert_allclose(one.values, three.values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one.intrinsics, three.intrinsics, rtol=1e-5)
    assert ud.UniDepthV2.from_pretrained(folder, device="cpu").predict(clip[:0]).values.shape == (0, 30, 60)


def test_registry_and_annotate_loader_build_the_in_repo_model(tmp_path: Path) -> None:
    cfg = tiny_config()
    sd = random_state_dict(cfg, seed=7)
    save_snapshot(tmp_path / "unidepth-v2-vitl14", cfg, sd)
    model = get_model("unidepth-v2-vitl14", tmp_path, device="cpu", batch_size=2)
    assert isinstance(model, ud.UniDepthV2) and model.version == "unidepth-v2-vitl14"
    clip = frames(3)
    pred = model.predict(clip)
    np.testing.assert_allclose(pred.values, reference_infer(sd, cfg, clip, (32, 4, 2))[0], rtol=1e-4, atol=1e-4)
    direct = load_depth_estimator("unidepth-v2-vitl14", checkpoint=str(tmp_path / "unidepth-v2-vitl14"), device="cpu")
    np.testing.assert_allclose(direct.predict(clip).values, pred.values, rtol=1e-6)
    # resolution_level narrows the pixel budget to one tenth of the range, as the official infer does
    low = get_model("unidepth-v2-vitl14", tmp_path, device="cpu", resolution_level=0)
    assert ud.pixel_budget(low.net.cfg, 0) == (1200.0, 1280.0)
    assert low.predict(clip).values.shape == (3, 30, 60)


def test_shape_rules_follow_the_official_infer() -> None:
    assert ud.unidepth_paddings((720, 1280), (0.5, 2.5)) == ((0, 0, 0, 0), (720, 1280))
    assert ud.unidepth_paddings((400, 100), (0.5, 2.5)) == ((50, 50, 0, 0), (400, 200))
    assert ud.unidepth_paddings((100, 400), (0.5, 2.5)) == ((0, 0, 30, 30), (160, 400))
    factor, size = ud.unidepth_resize((720, 1280), (200000, 600000))
    assert size == (588, 1036) and factor == pytest.approx((600000 / 921600) ** 0.5)
    assert ud.unidepth_resize((480, 640), (200000, 600000)) == (1.0, (490, 644))


# official names: UniDepthV2.build / Decoder.build / CameraHead / DepthHead / DinoVisionTransformer
VITL14_KEYS = {
    "pixel_encoder.cls_token": (1, 1, 1024),
    "pixel_encoder.pos_embed": (1, 1370, 1024),
    "pixel_encoder.register_tokens": (1, 1, 1024),
    "pixel_encoder.mask_token": (1, 1024),
    "pixel_encoder.patch_embed.proj.weight": (1024, 3, 14, 14),
    "pixel_encoder.blocks.0.norm1.weight": (1024,),
    "pixel_encoder.blocks.0.attn.qkv.weight": (3072, 1024),
    "pixel_encoder.blocks.0.attn.qkv.bias": (3072,),
    "pixel_encoder.blocks.0.attn.proj.weight": (1024, 1024),
    "pixel_encoder.blocks.0.ls1.gamma": (1024,),
    "pixel_encoder.blocks.23.mlp.fc1.weight": (4096, 1024),
    "pixel_encoder.blocks.23.mlp.fc2.bias": (1024,),
    "pixel_encoder.blocks.23.ls2.gamma": (1024,),
    "pixel_encoder.norm.bias": (1024,),
    "pixel_decoder.level_embeds": (1, 1, 4, 512),
    "pixel_decoder.input_adapter.input_adapters.3.weight": (512, 1024),
    "pixel_decoder.camera_token_adapter.input_adapters.0.bias": (512,),
    "pixel_decoder.camera_layer.latents_pos": (1, 4, 512),
    "pixel_decoder.camera_layer.project.proj1.weight": (512, 512),
    "pixel_decoder.camera_layer.aggregate1.kv.weight": (1024, 512),
    "pixel_decoder.camera_layer.aggregate1.q.weight": (512, 512),
    "pixel_decoder.camera_layer.aggregate1.out.weight": (512, 512),
    "pixel_decoder.camera_layer.aggregate1.norm_attnx.weight": (512,),
    "pixel_decoder.camera_layer.aggregate2.norm_attnctx.bias": (512,),
    "pixel_decoder.camera_layer.aggregate2.mlp.proj1.weight": (2048, 512),
    "pixel_decoder.camera_layer.aggregate2.mlp.norm.weight": (512,),
    "pixel_decoder.camera_layer.aggregate2.ls2.gamma": (512,),
    "pixel_decoder.camera_layer.out_pinhole.proj2.weight": (1, 512),
    "pixel_decoder.depth_layer.to_latents.weight": (512, 512),
    "pixel_decoder.depth_layer.prompt_camera.3.layers.0.kv.weight": (1024, 512),
    "pixel_decoder.depth_layer.prompt_camera.0.layers.0.mlp.proj2.weight": (512, 2048),
    "pixel_decoder.depth_layer.process_features.0.weight": (512, 512, 1, 1),
    "pixel_decoder.depth_layer.process_features.1.weight": (512, 512, 2, 2),
    "pixel_decoder.depth_layer.process_features.2.weight": (512, 256, 4, 4),
    "pixel_decoder.depth_layer.ups.0.convs.1.conv2.weight": (512, 512, 3, 3),
    "pixel_decoder.depth_layer.ups.0.convs.0.gamma": (1, 512, 1, 1),
    "pixel_decoder.depth_layer.ups.0.up.0.weight": (512, 512, 1, 1),
    "pixel_decoder.depth_layer.ups.1.up.0.weight": (256, 512, 1, 1),
    "pixel_decoder.depth_layer.ups.2.convs.0.conv1.weight": (256, 256, 3, 3),
    "pixel_decoder.depth_layer.ups.2.up.0.weight": (128, 256, 1, 1),
    "pixel_decoder.depth_layer.depth_mlp.2.0.weight": (128,),
    "pixel_decoder.depth_layer.depth_mlp.2.1.weight": (128, 128),
    "pixel_decoder.depth_layer.confidence_mlp.1.weight": (128, 128),
    "pixel_decoder.depth_layer.to_depth_lr.weight": (64, 128, 3, 3),
    "pixel_decoder.depth_layer.to_confidence_lr.weight": (64, 128, 3, 3),
    "pixel_decoder.depth_layer.to_depth_hr.0.weight": (32, 64, 3, 3),
    "pixel_decoder.depth_layer.to_depth_hr.2.weight": (1, 32, 1, 1),
    "pixel_decoder.depth_layer.to_confidence_hr.2.bias": (1,),
}


def _meta_layout(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = ud.UniDepthV2Net(ud.UniDepthV2Config.from_json(cfg))
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_real_vitl14_layout_has_the_official_names_and_shapes() -> None:
    layout = _meta_layout({"config": VITL14_CONFIG})  # the hub mixin's wrapper is accepted too
    for key, shape in VITL14_KEYS.items():
        assert layout.get(key) == shape, key
    assert len(layout) == 520
    assert sum(math.prod(s) for s in layout.values()) == 353_831_043
    assert sum(math.prod(s) for k, s in layout.items() if k.startswith("pixel_encoder.")) == 304_369_664
    # what the official code does NOT have: biases where use_bias=False, LayerScale in the prompts,
    # parameters for the identity depth MLPs of the first two stages, block chunking
    assert not any(k.endswith((".kv.bias", ".q.bias", ".out.bias")) for k in layout)
    assert not any("prompt_camera" in k and ".ls" in k for k in layout)
    assert not any(".depth_mlp.0." in k or ".depth_mlp.1." in k for k in layout)
    assert "pixel_encoder.blocks.0.0.norm1.weight" not in layout


def test_real_vits14_layout() -> None:
    cfg = copy.deepcopy(VITL14_CONFIG)  # configs/config_v2_vits.json
    cfg["model"]["pixel_encoder"].update(name="dinov2_vits14", output_idx=[3, 6, 9, 12])
    cfg["model"]["pixel_decoder"].update(hidden_dim=256, out_dim=32)
    layout = _meta_layout(cfg)
    assert layout["pixel_encoder.pos_embed"] == (1, 1370, 384)
    assert layout["pixel_encoder.blocks.11.attn.qkv.weight"] == (1152, 384)
    assert "pixel_encoder.blocks.12.norm1.weight" not in layout
    assert layout["pixel_decoder.input_adapter.input_adapters.0.weight"] == (256, 384)
    assert layout["pixel_decoder.depth_layer.process_features.2.weight"] == (256, 128, 4, 4)
    assert layout["pixel_decoder.depth_layer.to_depth_lr.weight"] == (32, 64, 3, 3)


def test_wrong_or_corrupt_snapshots_fail_with_what_is_wrong(tmp_path: Path) -> None:
    cfg = tiny_config()
    sd = random_state_dict(cfg)
    # a key missing, a key renamed, a shape changed: each named
    bad = dict(sd)
    bad.pop("pixel_decoder.level_embeds")
    bad["pixel_decoder.depth_layer.to_depth_lr.weight"] = torch.zeros(3, 8, 3, 3)
    save_snapshot(tmp_path / "unidepth-v2-vitl14", cfg, bad)
    with pytest.raises(CorruptWeights, match=r"1 missing keys \(e\.g\. pixel_decoder\.level_embeds\).*"
                                             r"1 shape mismatches.*to_depth_lr"):
        get_model("unidepth-v2-vitl14", tmp_path, device="cpu")
    # weights of another model size under this config
    other = copy.deepcopy(cfg)
    other["model"]["pixel_decoder"]["hidden_dim"] = 64
    save_snapshot(tmp_path / "unidepth-v2-vitl14", other, sd)
    with pytest.raises(CorruptWeights, match="shape mismatches"):
        get_model("unidepth-v2-vitl14", tmp_path, device="cpu")
    # not a safetensors file
    save_snapshot(tmp_path / "unidepth-v2-vitl14", cfg, sd)
    (tmp_path / "unidepth-v2-vitl14" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CorruptWeights, match="not a readable safetensors file"):
        get_model("unidepth-v2-vitl14", tmp_path, device="cpu")
    # a truncated one
    save_snapshot(tmp_path / "unidepth-v2-vitl14", cfg, sd)
    path = tmp_path / "unidepth-v2-vitl14" / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptWeights, match="not a readable safetensors file"):
        get_model("unidepth-v2-vitl14", tmp_path, device="cpu")
    # a broken or foreign config.json
    save_snapshot(tmp_path / "unidepth-v2-vitl14", cfg, sd)
    (tmp_path / "unidepth-v2-vitl14" / "config.json").write_text("{not json")
    with pytest.raises(CorruptWeights, match="config.json: not valid JSON"):
        get_model("unidepth-v2-vitl14", tmp_path, device="cpu")
    v1 = copy.deepcopy(cfg)
    v1["model"]["name"] = "UniDepthV1"
    (tmp_path / "unidepth-v2-vitl14" / "config.json").write_text(json.dumps(v1))
    with pytest.raises(CorruptWeights, match="only UniDepthV2 is reimplemented"):
        get_model("unidepth-v2-vitl14", tmp_path, device="cpu")
    unknown = copy.deepcopy(cfg)
    unknown["model"]["pixel_encoder"]["name"] = "dinov2_vitg14"
    (tmp_path / "unidepth-v2-vitl14" / "config.json").write_text(json.dumps(unknown))
    with pytest.raises(CorruptWeights, match="dinov2_vitg14.*not reimplemented"):
        get_model("unidepth-v2-vitl14", tmp_path, device="cpu")
    # files missing: the registry says which and where
    (tmp_path / "unidepth-v2-vitl14" / "model.safetensors").unlink()
    with pytest.raises(MissingWeights, match=r"unidepth-v2-vitl14/model\.safetensors"):
        get_model("unidepth-v2-vitl14", tmp_path, device="cpu")
    with pytest.raises(ValueError, match="no config.json"):
        ud.UniDepthV2.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="resolution_level 10"):
        save_snapshot(tmp_path / "ok", cfg, sd)
        ud.UniDepthV2.from_pretrained(tmp_path / "ok", device="cpu", resolution_level=10)
