"""Depth adapters (processors/geometry/depth.py): Depth Anything V2 built here and loaded from
official-format state dicts the tests save (random weights), UniDepth through the user's package
(the in-repo UniDepth V2 is tested in test_unidepth.py),
alignment to a backend's sparse depths, and the annotate stage's optional depth step."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from spatialvid.models import CorruptWeights, MissingPackage, MissingWeights, get_model, list_models  # noqa: E402
from spatialvid.processors.geometry import depth as depth_mod  # noqa: E402
from spatialvid.processors.geometry.depth import (  # noqa: E402
    DAV2_CONFIGS,
    DAV2Config,
    DepthAnythingV2,
    DepthAnythingV2Net,
    DepthPrediction,
    UniDepth,
    align_depth,
    dav2_input_size,
)

TINY = DAV2Config(embed_dim=32, depth=4, num_heads=2, features=8, out_channels=(4, 8, 16, 16), layers=(0, 1, 2, 3),
                  img_size=56)


def random_state_dict(cfg: DAV2Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official layout; the last conv's bias keeps the output mostly positive."""
    torch.manual_seed(seed)
    net = DepthAnythingV2Net(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.normal_(0.0, 0.2 if p.ndim > 1 else 0.1)
        net.depth_head.scratch.output_conv2[2].bias.fill_(1.0)
    return net.state_dict()


def frames(n: int, h: int = 40, w: int = 60, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)
    return np.stack([np.roll(base, 3 * i, axis=1) for i in range(n)])


def reference_forward(sd: dict[str, torch.Tensor], cfg: DAV2Config, rgb: np.ndarray, size: int) -> np.ndarray:
    """A straight reading of the official recipe over the state dict: resize, normalise,
    DINOv2 blocks with explicit attention, DPT head, resize back."""
    h, w = rgb.shape[:2]
    scale = max(size / h, size / w)

    def fit(x: float) -> int:  # the official Resize: a multiple of 14, rounded, at least `size`
        y = np.round(x / 14) * 14
        return int(y if y >= size else math.ceil(x / 14) * 14)

    nw, nh = fit(scale * w), fit(scale * h)
    img = cv2.resize(rgb / 255.0, (nw, nh), interpolation=cv2.INTER_CUBIC)
    img = (img - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    x = torch.from_numpy(img.astype(np.float32).transpose(2, 0, 1))[None]
    P, D, heads = cfg.patch_size, cfg.embed_dim, cfg.num_heads
    ph, pw = nh // P, nw // P
    g = lambda k: sd[k]  # noqa: E731
    t = F.conv2d(x, g("pretrained.patch_embed.proj.weight"), g("pretrained.patch_embed.proj.bias"), stride=P)
    t = torch.cat([g("pretrained.cls_token"), t.flatten(2).transpose(1, 2)], 1)
    pos, side = g("pretrained.pos_embed"), int(math.sqrt(g("pretrained.pos_embed").shape[1] - 1))
    grid = pos[:, 1:].reshape(1, side, side, D).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((ph + 0.1) / side, (pw + 0.1) / side), mode="bicubic")
    t = t + torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], 1)
    feats = []
    for i in range(cfg.depth):
        k = f"pretrained.blocks.{i}."
        y = F.layer_norm(t, (D,), g(k + "norm1.weight"), g(k + "norm1.bias"), 1e-6)
        q, kk, v = F.linear(y, g(k + "attn.qkv.weight"), g(k + "attn.qkv.bias")).reshape(1, -1, 3, heads, D // heads).unbind(2)
        att = torch.softmax(torch.einsum("bnhd,bmhd->bhnm", q, kk) / math.sqrt(D // heads), dim=-1)
        o = torch.einsum("bhnm,bmhd->bnhd", att, v).reshape(1, -1, D)
        t = t + g(k + "ls1.gamma") * F.linear(o, g(k + "attn.proj.weight"), g(k + "attn.proj.bias"))
        y = F.layer_norm(t, (D,), g(k + "norm2.weight"), g(k + "norm2.bias"), 1e-6)
        y = F.linear(F.gelu(F.linear(y, g(k + "mlp.fc1.weight"), g(k + "mlp.fc1.bias"))), g(k + "mlp.fc2.weight"),
                     g(k + "mlp.fc2.bias"))
        t = t + g(k + "ls2.gamma") * y
        if i in cfg.layers:
            feats.append(F.layer_norm(t, (D,), g("pretrained.norm.weight"), g("pretrained.norm.bias"), 1e-6)[:, 1:])
    h_ = "depth_head."
    rn = []
    for i, f in enumerate(feats):
        m = F.conv2d(f.transpose(1, 2).reshape(1, D, ph, pw), g(f"{h_}projects.{i}.weight"), g(f"{h_}projects.{i}.bias"))
        r = f"{h_}resize_layers.{i}."
        if i == 0:
            m = F.conv_transpose2d(m, g(r + "weight"), g(r + "bias"), stride=4)
        elif i == 1:
            m = F.conv_transpose2d(m, g(r + "weight"), g(r + "bias"), stride=2)
        elif i == 3:
            m = F.conv2d(m, g(r + "weight"), g(r + "bias"), stride=2, padding=1)
        rn.append(F.conv2d(m, g(f"{h_}scratch.layer{i + 1}_rn.weight"), None, padding=1))

    def rcu(x: torch.Tensor, p: str) -> torch.Tensor:
        y = F.conv2d(F.relu(x), g(p + "conv1.weight"), g(p + "conv1.bias"), padding=1)
        return F.conv2d(F.relu(y), g(p + "conv2.weight"), g(p + "conv2.bias"), padding=1) + x

    def fuse(n: int, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int] | None) -> torch.Tensor:
        p = f"{h_}scratch.refinenet{n}."
        if skip is not None:
            x = x + rcu(skip, p + "resConfUnit1.")
        x = rcu(x, p + "resConfUnit2.")
        x = F.interpolate(x, size=size, scale_factor=None if size else 2, mode="bilinear", align_corners=True)
        return F.conv2d(x, g(p + "out_conv.weight"), g(p + "out_conv.bias"))

    p = fuse(4, rn[3], None, tuple(rn[2].shape[2:]))
    p = fuse(3, p, rn[2], tuple(rn[1].shape[2:]))
    p = fuse(2, p, rn[1], tuple(rn[0].shape[2:]))
    p = fuse(1, p, rn[0], None)
    s = f"{h_}scratch."
    p = F.conv2d(p, g(s + "output_conv1.weight"), g(s + "output_conv1.bias"), padding=1)
    p = F.interpolate(p, (ph * P, pw * P), mode="bilinear", align_corners=True)
    p = F.relu(F.conv2d(p, g(s + "output_conv2.0.weight"), g(s + "output_conv2.0.bias"), padding=1))
    p = F.conv2d(p, g(s + "output_conv2.2.weight"), g(s + "output_conv2.2.bias"))
    p = torch.sigmoid(p) * cfg.max_depth if cfg.max_depth else F.relu(F.relu(p))
    return F.interpolate(p, (h, w), mode="bilinear", align_corners=True)[0, 0].numpy()


# ----------------------------------------------------------------------------- the architecture
def test_official_configs_have_the_published_sizes_and_key_layout() -> None:
    published = {"vits": 24.8e6, "vitb": 97.5e6, "vitl": 335.3e6, "vitg": 1.3e9}
    for enc, n in published.items():
        with torch.device("meta"):  # no memory: shapes only
            net = DepthAnythingV2Net(DAV2_CONFIGS[enc])
        count = sum(p.numel() for p in net.parameters())
        assert abs(count - n) < 0.05e6 if enc != "vitg" else abs(count - n) < 0.05e9, f"{enc}: {count} parameters, README says {n}"
    with torch.device("meta"):
        sd = DepthAnythingV2Net(DAV2_CONFIGS["vits"]).state_dict()
    expected = {  # names and shapes of the official depth_anything_v2_vits.pth
        "pretrained.cls_token": (1, 1, 384), "pretrained.pos_embed": (1, 1370, 384), "pretrained.mask_token": (1, 384),
        "pretrained.patch_embed.proj.weight": (384, 3, 14, 14), "pretrained.blocks.11.attn.qkv.weight": (1152, 384),
        "pretrained.blocks.0.ls1.gamma": (384,), "pretrained.blocks.5.mlp.fc1.weight": (1536, 384),
        "pretrained.blocks.11.ls2.gamma": (384,), "pretrained.norm.bias": (384,),
        "depth_head.projects.0.weight": (48, 384, 1, 1), "depth_head.projects.3.weight": (384, 384, 1, 1),
        "depth_head.resize_layers.0.weight": (48, 48, 4, 4), "depth_head.resize_layers.1.weight": (96, 96, 2, 2),
        "depth_head.resize_layers.3.weight": (384, 384, 3, 3), "depth_head.scratch.layer1_rn.weight": (64, 48, 3, 3),
        "depth_head.scratch.layer4_rn.weight": (64, 384, 3, 3),
        "depth_head.scratch.refinenet4.resConfUnit1.conv1.weight": (64, 64, 3, 3),
        "depth_head.scratch.refinenet1.out_conv.weight": (64, 64, 1, 1),
        "depth_head.scratch.output_conv1.weight": (32, 64, 3, 3),
        "depth_head.scratch.output_conv2.0.weight": (32, 32, 3, 3), "depth_head.scratch.output_conv2.2.weight": (1, 32, 1, 1),
    }
    for k, shape in expected.items():
        assert k in sd and tuple(sd[k].shape) == shape, f"{k}: {tuple(sd[k].shape) if k in sd else 'absent'} != {shape}"
    assert len(sd) == 239 and not any("bias" in k for k in sd if "_rn." in k), "layerN_rn have no bias"
    with torch.device("meta"):
        g = DepthAnythingV2Net(DAV2_CONFIGS["vitg"]).state_dict()
    assert tuple(g["pretrained.blocks.39.mlp.w12.weight"].shape) == (8192, 1536) and "pretrained.blocks.0.mlp.fc1.weight" not in g


def test_official_resize_rule() -> None:
    assert dav2_input_size(1280, 720) == (924, 518)
    assert dav2_input_size(640, 480) == (686, 518)
    assert dav2_input_size(518, 518) == (518, 518)
    w, h = dav2_input_size(720, 1280)
    assert (w, h) == (518, 924)


@pytest.mark.parametrize("max_depth", [None, 20.0])
def test_loaded_checkpoint_matches_a_reference_forward_pass(tmp_path: Path, max_depth: float | None) -> None:
    cfg = DAV2Config(**{**TINY.__dict__, "max_depth": max_depth})
    sd = random_state_dict(cfg)
    path = tmp_path / "tiny.pth"
    torch.save(sd, path)
    model = DepthAnythingV2.from_checkpoint(path, cfg, device="cpu", input_size=56, batch_size=2)
    assert model.kind == ("metric" if max_depth else "disparity")
    clip = frames(3)
    pred = model.predict(clip)
    assert pred.values.shape == (3, 40, 60) and pred.values.dtype == np.float32 and pred.kind == model.kind
    for i in range(3):
        ref = reference_forward(sd, cfg, clip[i], 56)
        np.testing.assert_allclose(pred.values[i], ref, rtol=1e-4, atol=1e-5, err_msg=f"frame {i}")
    assert pred.values.std() > 0, "random weights must give a non-constant map, or the comparison proves nothing"
    if max_depth:
        assert 0 < pred.values.min() and pred.values.max() < max_depth


def test_batch_size_does_not_change_the_output(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(random_state_dict(TINY), path)
    clip = frames(5)
    one = DepthAnythingV2.from_checkpoint(path, TINY, device="cpu", input_size=56, batch_size=1).predict(clip)
    many = DepthAnythingV2.from_checkpoint(path, TINY, device="cpu", input_size=56, batch_size=4).predict(clip)
    np.testing.assert_allclose(one.values, many.values, rtol=1e-5, atol=1e-6)


def test_wrong_or_corrupt_checkpoints_name_the_file(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.pth"
    torch.save(random_state_dict(TINY), tiny)
    with pytest.raises(ValueError, match=r"tiny\.pth is not a Depth Anything V2 vits checkpoint: .*missing keys"):
        DepthAnythingV2.from_checkpoint(tiny, "vits", device="cpu")
    sd = random_state_dict(TINY)
    sd["depth_head.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="unexpected keys.*depth_head.extra.weight"):
        DepthAnythingV2.from_checkpoint(tmp_path / "extra.pth", TINY, device="cpu")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"junk\.pth: not a readable PyTorch checkpoint"):
        DepthAnythingV2.from_checkpoint(tmp_path / "junk.pth", TINY, device="cpu")
    # Through the registry: a missing file says where to get it; a bad one names the file.
    with pytest.raises(MissingWeights, match=r"depth_anything_v2_vitl\.pth.*huggingface\.co/depth-anything"):
        get_model("depth-anything-v2-vitl", tmp_path)
    (tmp_path / "depth_anything_v2_vits.pth").write_bytes(b"\x00" * 64)
    with pytest.raises(CorruptWeights, match=r"depth_anything_v2_vits\.pth"):
        get_model("depth-anything-v2-vits", tmp_path)


def test_real_vits_layout_loads_strictly_through_the_registry(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save(DepthAnythingV2Net(DAV2_CONFIGS["vits"]).state_dict(), tmp_path / "depth_anything_v2_vits.pth")
    model = get_model("depth-anything-v2-vits", tmp_path, device="cpu", input_size=28)  # small input: fast
    assert model.version == "depth-anything-v2-vits-relative-518" and model.kind == "disparity"
    pred = model.predict(frames(2, 30, 44))
    assert pred.values.shape == (2, 30, 44) and np.isfinite(pred.values).all()


def test_registry_lists_the_depth_models() -> None:
    names = {s.name: s for s in list_models("depth")}
    assert {"depth-anything-v2-vits", "depth-anything-v2-vitl", "depth-anything-v2-metric-hypersim-vitl",
            "unidepth-v2-vitl14"} <= set(names)
    assert names["depth-anything-v2-vits"].weights.license == "Apache-2.0"
    assert names["depth-anything-v2-vitl"].weights.license == "CC-BY-NC-4.0"
    assert names["depth-anything-v2-metric-vkitti-vitl"].options["max_depth"] == 80.0
    assert "safetensors" in names["unidepth-v2-vitl14"].requires  # in-repo architecture (test_unidepth.py)


# ----------------------------------------------------------------------------- UniDepth
def test_unidepth_without_its_package_says_what_to_install_and_where_the_files_go(tmp_path: Path) -> None:
    if "unidepth" in sys.modules or importlib.util.find_spec("unidepth") is not None:
        pytest.skip("a real unidepth package is installed here")
    with pytest.raises(MissingPackage, match=r"unidepth.*github\.com/lpiccinelli-eth/UniDepth.*config\.json"):
        UniDepth.from_pretrained(tmp_path / "unidepth-v2-vitl14")
    folder = tmp_path / "unidepth-v2-vitl14"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"stand-in")
    with pytest.raises(MissingPackage, match=r"`unidepth` package.*pip install -e UniDepth"):
        get_model("unidepth-v2-vitl14", tmp_path, implementation="package")


class FakeUniDepthV2(torch.nn.Module):
    """Stands in for the package's class (same from_pretrained / infer contract) to test the
    adapter's glue: batching, shapes, the intrinsics read-out. Not UniDepth's model."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))
        self.calls: list[tuple[int, ...]] = []

    @classmethod
    def from_pretrained(cls, folder: str) -> "FakeUniDepthV2":
        return cls(json.loads((Path(folder) / "config.json").read_text())["scale"])

    def infer(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        assert rgb.ndim == 4 and rgb.shape[1] == 3
        self.calls.append(tuple(rgb.shape))
        b, _, h, w = rgb.shape
        depth = self.scale * (1.0 + rgb.float().mean(1, keepdim=True) / 255.0)
        K = torch.tensor([[0.9 * w, 0, w / 2], [0, 0.9 * w, h / 2], [0, 0, 1.0]]).expand(b, 3, 3)
        return {"depth": depth, "intrinsics": K}


def test_unidepth_adapter_glue_with_a_stand_in_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg, sub = types.ModuleType("unidepth"), types.ModuleType("unidepth.models")
    pkg.__spec__ = importlib.machinery.ModuleSpec("unidepth", None)
    sub.UniDepthV2 = FakeUniDepthV2  # type: ignore[attr-defined]
    pkg.models = sub  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "unidepth", pkg)
    monkeypatch.setitem(sys.modules, "unidepth.models", sub)
    folder = tmp_path / "unidepth-v2-vitl14"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"scale": 2.0}))
    (folder / "model.safetensors").write_bytes(b"stand-in")
    model = get_model("unidepth-v2-vitl14", tmp_path, device="cpu", batch_size=2, implementation="package")
    assert isinstance(model, UniDepth) and model.kind == "metric" and model.version == "unidepth-v2-vitl14"
    clip = frames(3)
    pred = model.predict(clip)
    assert [c[0] for c in model.model.calls] == [2, 1], "frames go in batches of batch_size"
    expect = 2.0 * (1.0 + clip.astype(np.float32).mean(-1) / 255.0)
    np.testing.assert_allclose(pred.values, expect, rtol=1e-5)
    assert pred.intrinsics is not None and pred.intrinsics.shape == (3, 4)
    np.testing.assert_allclose(pred.intrinsics[0], [54.0, 54.0, 30.0, 20.0])


# ----------------------------------------------------------------------------- alignment
def scene(n: int = 3, h: int = 48, w: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
    """True depth maps (a slanted plane per frame) and 200 sparse points per frame in units of 1/7."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    depth = np.stack([2.0 + xx / w + yy / h + 0.3 * i for i in range(n)]).astype(np.float32)
    sparse = []
    for d in depth:
        u, v = rng.uniform(0, w, 200), rng.uniform(0, h, 200)
        sparse.append(np.column_stack([u, v, d[v.astype(int), u.astype(int)] / 7.0]))
    return depth, sparse


def test_relative_disparity_is_aligned_per_frame_to_the_sparse_depths() -> None:
    depth, sparse = scene()
    disp = np.stack([(3.0 + i) / d + 0.05 * i for i, d in enumerate(depth)])  # per-frame affine disparity
    out = align_depth(DepthPrediction(disp.astype(np.float32), "disparity"), sparse)
    assert out.aligned and out.alignment.startswith("disparity, per-frame median scale/shift")
    np.testing.assert_allclose(out.depth, depth / 7.0, rtol=0.02)


def test_metric_depth_gets_one_median_scale_and_no_points_leaves_it_marked() -> None:
    depth, sparse = scene()
    out = align_depth(DepthPrediction(depth * 1.3, "metric"), sparse)
    assert out.aligned and out.params["scale"] == pytest.approx(1 / (7 * 1.3), rel=1e-4)
    np.testing.assert_allclose(out.depth, depth / 7.0, rtol=1e-4)
    raw = align_depth(DepthPrediction(depth, "metric"), None)
    assert not raw.aligned and "not aligned" in raw.alignment and np.array_equal(raw.depth, depth)
    rel = align_depth(DepthPrediction(1.0 / depth, "disparity"), [None, None, None])
    assert not rel.aligned and rel.alignment.startswith("relative disparity, not aligned")
    np.testing.assert_allclose(rel.depth, depth, rtol=1e-5)


# ----------------------------------------------------------------------------- the annotate stage
def test_annotate_stage_writes_aligned_depth_and_names_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pycolmap")
    from spatialvid.config import Config
    from spatialvid.processors.geometry.annotate import AnnotateStage, release_group
    from spatialvid.producers.rendered import render_sequence, write_video
    from spatialvid.schemas.records import ScoreRecord
    from spatialvid.sinks.release import read_clip_annotations, release_paths

    ckpt = tmp_path / "my_vits.pth"
    torch.save(random_state_dict(DAV2_CONFIGS["vits"]), ckpt)  # positive output: something to align
    real = depth_mod.load_depth_estimator
    monkeypatch.setattr(depth_mod, "load_depth_estimator", lambda *a, **k: real(*a, input_size=28, **k))  # fast
    cfg = Config(data_dir=str(tmp_path / "data"))
    cfg.annotate.threads = 2
    cfg.annotate.masks = False
    cfg.annotate.depth_model = "depth-anything-v2-vits"
    cfg.annotate.depth_checkpoint = str(ckpt)
    clip = render_sequence("handheld", 320, 180, fps=10.0, duration_s=4.0)
    uri = str(write_video(clip.frames, tmp_path / "walk.mp4", fps=10.0))
    stage = AnnotateStage(cfg)
    stage.setup()
    try:
        rec = stage.annotate(ScoreRecord(clip_id="walk_0", video_id="walk", model_id="test", model_version="1",
                                         passed=True, uri=uri, frame_start=0, frame_end=40, fps=10.0))
    finally:
        stage.teardown()
    assert rec.success, rec.failure_reason
    assert rec.depth_model == "depth-anything-v2-vits-relative-518"
    assert rec.depth_alignment == "disparity, per-frame median scale/shift to colmap sparse depth"
    paths = release_paths(cfg.artifacts_dir, "walk_0", release_group("walk_0", cfg.annotate.release_groups))
    ann = read_clip_annotations(rec.artifacts_uri, depth_zip=paths.depth_zip, masks=False)
    assert ann.disparity is not None and ann.disparity.shape == (rec.num_poses, 180, 320)
    assert np.isfinite(ann.disparity).all() and (ann.disparity > 0).all()
