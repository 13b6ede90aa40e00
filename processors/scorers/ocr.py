"""OCR text-area filter (SPEC.md §2): how much of a frame is covered by text.

Per sampled frame (640x360): detect text with the PP-OCR DB detector (PaddleOCR
family; only detection is needed), ratio = total area of the detected text polygons
/ frame area, both measured on that same frame. Clip value: the maximum over the
sampled frames; reject when it is above ``filters.ocr_max`` (0.3).

Fix of the reference (SPEC.md §2): it divides box areas measured on 640x360 frames by
the ORIGINAL frame area, so at 1080p the cut almost never fires. Here the boxes come
back in the coordinates of the frame that was scored and are divided by its area.

Backend: rapidocr 3.10, whose wheel ships ``models/PP-OCRv6_det_small.onnx``; it runs
offline on onnxruntime (the model path is passed explicitly, so rapidocr never tries to
download one). rapidocr_onnxruntime 1.4 also ships a detector (PP-OCRv4) but requires
the GUI ``opencv-python`` and Python < 3.13, so it is not used. The detector's input
size follows PaddleOCR's defaults (longest side capped at 960, both sides rounded to
multiples of 32), so a 640x360 frame is scored at 640x352 rather than upscaled as
rapidocr's own default (shortest side 736) would. Frames of one size are detected in
one onnxruntime call (a batch), then post-processed one by one.

On CUDA (``scoring.device`` auto with a GPU, or cuda) the same ONNX file runs on torch
instead (:class:`TorchOcrDetector`: a small interpreter of the graph's operators on its
own weights, batched, fp16), since onnxruntime's wheel is CPU-only; pre- and
post-processing stay rapidocr's. Needs the ``onnx`` package to read the graph. There the
DB post-processing runs in a few worker processes (:meth:`TorchOcrDetector.score_async`),
fed the float16 maps and widening them to float32 exactly as the in-thread path does.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np

DET_FILE = "models/PP-OCRv6_det_small.onnx"


def polygon_area(poly: np.ndarray) -> float:
    """Area of a simple polygon given as N x 2 points (shoelace formula)."""
    x, y = np.asarray(poly, np.float64).T
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def text_area_ratio(boxes: Sequence[np.ndarray], height: int, width: int) -> float:
    """Total text polygon area / frame area, both in the same frame's pixels."""
    return sum(polygon_area(b) for b in boxes) / float(height * width)


def bucket(n: int, cap: int) -> int:
    """The padded batch size for ``n`` frames: the next power of two, at most ``cap``."""
    return min(max(cap, n), 1 << max(0, n - 1).bit_length())


def bucket_sizes(cap: int) -> list[int]:
    """Every size :func:`bucket` returns for batches of 1..``cap`` frames."""
    return sorted({bucket(n, cap) for n in range(1, cap + 1)})


def capture_cuda_graph(forward: Callable[[Any], Any], static_in: Any, name: str) -> tuple[Any, Any] | None:
    """``forward`` on ``static_in`` as a CUDA graph: warmed up twice on a side stream, then
    captured; returns (graph, its static output), or None (logged) when capture fails and
    the caller runs eagerly (same values)."""
    import torch

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                forward(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = forward(static_in)
        return graph, out
    except Exception as exc:  # pragma: no cover - depends on the CUDA build
        import logging

        logging.getLogger(__name__).warning("%s: CUDA graph capture failed (%s); running eagerly", name, exc)
        return None


def pad_to_bucket(x: Any, cap: int) -> Any:
    """A batch tensor padded with blank rows to :func:`bucket` size (rows do not affect each other)."""
    import torch

    n = len(x)
    if (b := bucket(n, cap)) > n:
        x = torch.cat([x, x.new_zeros((b - n, *x.shape[1:]))])
    return x


def stack_batch(inputs: Sequence[Any], pin: bool = True) -> Any:
    """Prepared model inputs as one batch tensor: tensors (made on the device) stacked
    there, host arrays stacked on the host (``pin``: into pinned memory when there is CUDA,
    ready for a non-blocking copy to the device)."""
    import torch

    if isinstance(inputs[0], torch.Tensor):
        return torch.stack(list(inputs))
    x = torch.from_numpy(np.stack(inputs))
    return x.pin_memory() if pin and torch.cuda.is_available() else x


def shape_batches(prepared: Sequence[tuple[Any, Any]], step: int) -> Iterator[list[int]]:
    """Positions of the prepared (frame size, input) pairs in network batches: inputs of one
    shape together, ``step`` at a time (0: all of one shape at once)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, (_, x) in enumerate(prepared):
        by_shape.setdefault(tuple(x.shape), []).append(i)
    for idx in by_shape.values():
        n = step or len(idx)
        for s in range(0, len(idx), n):
            yield idx[s:s + n]


def ocr_passes(ratio: float, hi: float = 0.3) -> tuple[bool, str]:
    """Keep when the text-area ratio <= ``hi``; otherwise the reason."""
    if ratio > hi:
        return False, f"text covers {ratio:.1%} of a frame > {hi:.0%}"
    return True, ""


def post_ratios(op: Any, maps: np.ndarray, shapes: Sequence[tuple[int, int]]) -> list[float]:
    """rapidocr's DB post-processing (``op``) of k probability maps (k x H x W, float16 or
    float32) -> the text-area ratio of each frame (``shapes``: the scored frames' sizes).

    The map is widened to float32 first (exact for float16), so the threshold, contours,
    box scores (``cv2.mean`` over the float32 map) and unclip see the values that the
    in-thread path gives rapidocr: the same boxes, the same ratios.
    """
    out = []
    for m, shape in zip(maps, shapes):
        pred = np.asarray(m, np.float32).reshape(1, 1, *m.shape[-2:])
        boxes = op(pred, shape)[0]
        out.append(text_area_ratio(np.asarray(boxes, np.float64).reshape(-1, 4, 2), *shape))
    return out


def early_min_size(op: Any) -> Any:
    """rapidocr's ``DBPostProcess`` ``op``, deciding the minimum-size test of a contour first.

    ``boxes_from_bitmap`` drops every contour whose minimum-area rectangle is thinner than
    ``min_size`` right after ``get_mini_boxes`` built its corner points (``boxPoints``, a
    Python sort, an array): on textured frames ~96% of the contours. Here those return at
    once with the same short side and no box; every other contour gets rapidocr's own
    ``get_mini_boxes``. The boxes are the same; the post-processing is 1.4-1.6x faster.
    """
    from rapidocr.ch_ppocr_det.utils import DBPostProcess

    if type(op) is not DBPostProcess:
        return op
    fast = object.__new__(_early_min_size_class())
    fast.__dict__.update(op.__dict__)
    return fast


@lru_cache(maxsize=None)
def _early_min_size_class() -> type:
    """The subclass, made on first use (rapidocr is an optional package and slow to import)."""
    from rapidocr.ch_ppocr_det.utils import DBPostProcess

    class EarlyMinSize(DBPostProcess):  # type: ignore[misc, valid-type]
        def get_mini_boxes(self, contour: np.ndarray) -> tuple[Any, float]:
            sside = min(cv2.minAreaRect(contour)[1])
            if sside < self.min_size:  # both callers drop it (the second at min_size + 2)
                return None, sside
            return super().get_mini_boxes(contour)

    EarlyMinSize.__module__, EarlyMinSize.__qualname__ = __name__, "_EarlyMinSize"
    return EarlyMinSize


def __getattr__(name: str) -> Any:  # PEP 562: where pickle finds that class in a worker process
    if name == "_EarlyMinSize":
        return _early_min_size_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_POST_OP: Any = None  # rapidocr's DBPostProcess, in a post-processing worker process


def _init_post_process(op: Any) -> None:
    global _POST_OP
    cv2.setNumThreads(1)
    _POST_OP = op


def _post_in_process(maps: np.ndarray, shapes: Sequence[tuple[int, int]]) -> tuple[list[float], float]:
    """A worker process's share of one model call: (ratios, seconds spent)."""
    return _post_in_thread(_POST_OP, maps, shapes)


def _post_in_thread(op: Any, maps: np.ndarray, shapes: Sequence[tuple[int, int]]) -> tuple[list[float], float]:
    t = time.perf_counter()
    return post_ratios(op, maps, shapes), time.perf_counter() - t


def gather_ratios(parts: Sequence[tuple[Future, Sequence[int]]], n: int,
                  stats: list[float] | None = None) -> "Future[np.ndarray]":
    """One future for ``n`` ratios whose shares (a future of (ratios, seconds), their
    positions) are computed elsewhere; positions in no share stay 0 (no box)."""
    out = np.zeros(n, np.float64)
    result: Future = Future()
    if not parts:
        result.set_result(out)
        return result
    lock, left = threading.Lock(), [len(parts)]

    def done(fut: Future, positions: Sequence[int]) -> None:
        try:
            values, seconds = fut.result()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
            with lock:
                if not result.done():
                    result.set_exception(exc)
            return
        out[list(positions)] = values
        with lock:
            if stats is not None:
                stats[0] += len(positions)
                stats[1] += seconds
            left[0] -= 1
            if left[0] == 0 and not result.done():
                result.set_result(out)

    for fut, positions in parts:
        fut.add_done_callback(partial(done, positions=positions))
    return result


def detector_input(preprocess: Callable[[np.ndarray], np.ndarray],
                   rgb: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
    """(frame size, rapidocr's detector input) for one RGB frame (PaddleOCR models take BGR)."""
    return rgb.shape[:2], preprocess(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def detector_input_u8(resize: Callable[[np.ndarray], np.ndarray],
                      rgb: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
    """(frame size, rapidocr's resized BGR frame, uint8 H x W x 3): the torch path's input.

    The same ``cv2.resize`` as rapidocr's preprocessing; its normalisation runs on the
    device (:meth:`TorchOcrDetector._normalise`), so a quarter of the bytes travel.
    (``cv2.cvtColor`` swaps the channels ~40x faster than a numpy copy of ``rgb[..., ::-1]``.)
    """
    return rgb.shape[:2], np.ascontiguousarray(resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))


class RapidOcrDetector:
    """PP-OCR text detection on onnxruntime (CPU), batched over frames of one size."""

    model_id = "rapidocr-ppocrv6-det"
    is_proxy = False
    reduce = "max"
    device = "cpu"
    batch_size = 0  # frames per network call; 0: every frame of one shape at once

    def __init__(self, model_path: str | Path, version: str, threads: int = 2, limit_side_len: int = 960) -> None:
        from rapidocr import RapidOCR

        self.version = version
        self.engine = RapidOCR(params={
            "Global.use_cls": False, "Global.use_rec": False, "Global.log_level": "error",
            "Det.model_path": str(model_path), "Det.limit_type": "max", "Det.limit_side_len": limit_side_len,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads if threads > 0 else -1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })
        # Load the ONNX graph now, so a bad file stops the stage at start-up.
        self.det = self.engine._load_det_model()
        self.det.postprocess_op = early_min_size(self.det.postprocess_op)
        self.preprocess = self.det.get_preprocess()

    def prepare(self, rgb: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
        """The detector's input for one RGB frame (PaddleOCR models take BGR)."""
        return detector_input(self.preprocess, rgb)

    def preparer(self) -> Callable[[np.ndarray], tuple[tuple[int, int], np.ndarray]]:
        """:meth:`prepare` as a small picklable function (for decode worker processes)."""
        return partial(detector_input, self.preprocess)

    def probability_maps(self, batch: np.ndarray) -> np.ndarray:
        """The detector's output (N x 1 x H x W) for one stacked batch."""
        return self.det.session(batch)

    def boxes(self, prepared: Sequence[tuple[tuple[int, int], np.ndarray]]) -> list[np.ndarray]:
        """Text polygons per prepared frame, in that frame's pixel coordinates.

        Frames of one input shape go through the network together, ``batch_size`` at a
        time (0: all of them), then through rapidocr's DB post-processing one by one.
        """
        out: list[np.ndarray] = [np.empty((0, 4, 2))] * len(prepared)
        for part in shape_batches(prepared, self.batch_size):
            pred, cand = self._detect([prepared[i][1] for i in part])
            for j, i in enumerate(cand):
                found = self.det.postprocess_op(np.asarray(pred[j:j + 1], np.float32), prepared[part[i]][0])[0]
                out[part[i]] = np.asarray(found, np.float64).reshape(-1, 4, 2)
        return out

    def _detect(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        """Probability maps of the frames that need post-processing, and their positions."""
        return self.probability_maps(np.concatenate(inputs)), list(range(len(inputs)))

    def score(self, prepared: Sequence[tuple[tuple[int, int], np.ndarray]]) -> np.ndarray:
        """Text-area ratio per prepared frame."""
        return np.array([text_area_ratio(b, *p[0]) for b, p in zip(self.boxes(prepared), prepared)], np.float64)

    @staticmethod
    def verdict(value: float, filters: Any) -> tuple[bool, str]:
        return ocr_passes(value, filters.ocr_max)


# -- the same detector graph on torch (CUDA) -------------------------------------------
def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: (v.decode() if isinstance(v := onnx.helper.get_attribute_value(a), bytes) else v)
            for a in node.attribute}


def _same_upper(x: Any, kernel: Sequence[int], strides: Sequence[int], value: float = 0.0) -> Any:
    """ONNX ``auto_pad=SAME_UPPER`` (output = ceil(in / stride), the odd pixel at the end)."""
    import torch.nn.functional as F

    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(strides)):
        total = max(0, (-(-size // s) - 1) * s + k - size)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def load_torch_detector(model_path: str | Path) -> Any:
    """The PP-OCR detector's ONNX graph as a torch module, executed node by node.

    A small interpreter of the 15 operator types this graph uses (opset 11; batch norms
    are already folded into the convolutions): Conv, ConvTranspose, Add, Mul, Div, Erf
    (GELU), HardSigmoid, ReduceMean, GlobalAveragePool, MaxPool, nearest Resize with
    constant integer scales, Concat, Relu, Sigmoid, Identity. The weights are the ONNX file's
    initializers, so it computes what onnxruntime computes (tests compare the two); an
    operator outside this list fails at load time with its name, not mid-stream.
    """
    import onnx
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper
    from torch import nn

    proto = onnx.load(str(model_path))
    graph = proto.graph
    known = {"Conv", "ConvTranspose", "Add", "Mul", "Div", "Erf", "HardSigmoid", "ReduceMean",
             "GlobalAveragePool", "MaxPool", "Resize", "Concat", "Relu", "Sigmoid", "Identity"}
    unknown = sorted({n.op_type for n in graph.node} - known)
    if unknown:
        raise ValueError(f"{model_path}: ONNX operators {unknown} are not supported by the torch detector; "
                         "use the onnxruntime path (scoring.device = 'cpu')")

    class Graph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.consts: dict[str, np.ndarray] = {}
            self.names: dict[str, str] = {}
            self.scalars: dict[str, float] = {}  # 0-d constants stay Python floats: no copy per call
            for k, init in enumerate(graph.initializer):
                arr = numpy_helper.to_array(init)
                self.consts[init.name] = arr
                if arr.dtype.kind == "f" and arr.ndim == 0:
                    self.scalars[init.name] = float(arr)
                elif arr.dtype.kind == "f" and arr.size > 0:  # weights live on the device
                    self.names[init.name] = f"w{k}"
                    self.register_buffer(f"w{k}", torch.from_numpy(arr.copy()))
            self.nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in graph.node]
            self.input_name, self.output_name = graph.input[0].name, graph.output[0].name

        def value(self, env: dict[str, Any], name: str, like: Any) -> Any:
            if name in env:
                return env[name]
            if name in self.names:
                return getattr(self, self.names[name]).to(like.dtype)
            return self.scalars.get(name)  # None for the rest (Resize's empty roi, read from consts)

        def forward(self, x: Any) -> Any:
            env: dict[str, Any] = {self.input_name: x}
            for op, ins, outs, a in self.nodes:
                v = [self.value(env, n, x) if n else None for n in ins]
                if op == "Conv" or op == "ConvTranspose":
                    stride, dil, groups = a.get("strides", [1, 1]), a.get("dilations", [1, 1]), a.get("group", 1)
                    inp, pad = v[0], a.get("pads", [0, 0, 0, 0])
                    if a.get("auto_pad", "NOTSET") == "SAME_UPPER":
                        inp, pad = _same_upper(inp, a["kernel_shape"], stride), [0, 0, 0, 0]
                    if pad[0] != pad[2] or pad[1] != pad[3]:
                        raise ValueError(f"asymmetric pads {pad} in {op}")
                    conv = F.conv2d if op == "Conv" else F.conv_transpose2d
                    y = conv(inp, v[1], v[2] if len(v) > 2 else None, stride=stride, padding=pad[:2],
                             dilation=dil, groups=groups)
                elif op == "Add":
                    y = v[0] + v[1]
                elif op == "Mul":
                    y = v[0] * v[1]
                elif op == "Div":
                    y = v[0] / v[1]
                elif op == "Erf":
                    y = torch.erf(v[0])
                elif op == "HardSigmoid":
                    y = torch.clamp(a.get("alpha", 0.2) * v[0] + a.get("beta", 0.5), 0.0, 1.0)
                elif op == "ReduceMean":
                    y = v[0].mean(dim=a["axes"], keepdim=bool(a.get("keepdims", 1)))
                elif op == "GlobalAveragePool":
                    y = v[0].mean(dim=(2, 3), keepdim=True)
                elif op == "MaxPool":
                    inp = v[0]
                    if a.get("auto_pad", "NOTSET") == "SAME_UPPER":
                        inp = _same_upper(inp, a["kernel_shape"], a["strides"], float("-inf"))
                    elif any(a.get("pads", [0])):
                        raise ValueError("explicit MaxPool pads are not supported")
                    y = F.max_pool2d(inp, a["kernel_shape"], a["strides"], ceil_mode=bool(a.get("ceil_mode", 0)))
                elif op == "Resize":
                    if a.get("mode") != "nearest" or a.get("coordinate_transformation_mode") != "asymmetric":
                        raise ValueError(f"Resize {a} is not supported")
                    scales = [float(s) for s in self.consts[ins[2]]]
                    if scales[:2] != [1.0, 1.0] or any(s != int(s) for s in scales[2:]):
                        raise ValueError(f"Resize scales {scales} are not integer spatial scales")
                    # nearest/asymmetric/floor with an integer scale repeats each pixel: exact
                    y = F.interpolate(v[0], scale_factor=scales[2:], mode="nearest")
                elif op == "Concat":
                    y = torch.cat(v, dim=a["axis"])
                elif op == "Relu":
                    y = torch.relu(v[0])
                elif op == "Sigmoid":
                    y = torch.sigmoid(v[0])
                else:  # Identity
                    y = v[0]
                env[outs[0]] = y
            return env[self.output_name]

    return Graph().eval()


class TorchOcrDetector(RapidOcrDetector):
    """The same PP-OCR detector on torch: CUDA, batched, half precision by default.

    Pre- and post-processing are rapidocr's (the same resize/normalise, DB threshold,
    box scoring and unclip as the onnxruntime path); only the network runs in torch,
    on the ONNX file's own weights (:func:`load_torch_detector`). On CUDA in fp16 the
    probability map differs from onnxruntime's by ~1e-3, which can move a box edge by a
    pixel: ratios agree to ~1e-3, and the version string says ``-torch-cuda-fp16``.
    """

    def __init__(self, model_path: str | Path, version: str, device: str = "cuda", half: bool = True,
                 batch_size: int = 32, threads: int = 2, limit_side_len: int = 960, graphs: bool = True,
                 post_processes: int | None = None) -> None:
        import torch

        super().__init__(model_path, version, threads, limit_side_len)
        self.device = device
        self.dtype = torch.float16 if half and device.startswith("cuda") else torch.float32
        self.net = load_torch_detector(model_path).to(device, self.dtype)
        self.batch_size = max(1, batch_size)
        tag = "-torch-" + device.split(":")[0] + ("-fp16" if self.dtype == torch.float16 else "")
        self.version = version + tag
        self._post = ThreadPoolExecutor(max(1, threads), thread_name_prefix="ocr-post")
        # DB post-processing in worker processes (default on CUDA: ``threads`` of them): the
        # model thread then only launches networks, and the contour/box/unclip Python runs
        # in parallel instead of on GIL-bound threads beside it. 0: the threads above.
        if post_processes is None:
            post_processes = max(1, threads) if device.startswith("cuda") else 0
        self.post_processes = max(0, post_processes)
        self._procs: Executor | None = None
        self.post_stats = [0, 0.0]  # frames post-processed, seconds spent on them (summed over workers)
        pre = self.preprocess
        self._scale = float(pre.scale)
        # rapidocr normalises in float64 ((x * f32(1/255)) - mean) / std, then float32
        self._mean = torch.tensor(np.asarray(pre.mean, np.float64).reshape(1, 3, 1, 1), device=device)
        self._std = torch.tensor(np.asarray(pre.std, np.float64).reshape(1, 3, 1, 1), device=device)
        post = self.det.postprocess_op
        # A box needs its mean probability >= box_thresh (and a pixel > thresh to exist at
        # all); a mean never exceeds the map's maximum, so a frame whose maximum stays below
        # both has no box: the gate for the transfer and the post-processing.
        self.thresh = max(float(post.thresh), float(getattr(post, "box_thresh", post.thresh)))
        self.gated = [0, 0]  # frames skipped by the gate, frames detected
        self.graphs = graphs and device.startswith("cuda")
        self._compiled: dict[tuple[int, int, int], tuple[Any, Any, Any, Any]] = {}
        self._input_sizes: dict[tuple[int, int], tuple[int, int]] = {}

    def prepare(self, rgb: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
        """The resized BGR frame as uint8 (normalised on the device)."""
        return detector_input_u8(self.preprocess.resize, rgb)

    def preparer(self) -> Callable[[np.ndarray], tuple[tuple[int, int], np.ndarray]]:
        return partial(detector_input_u8, self.preprocess.resize)

    def prepare_device(self, frames: Any) -> list[tuple[tuple[int, int], Any]]:
        """:meth:`prepare` of a batch of RGB frames already on the device (N x H x W x 3
        uint8): the channel swap and rapidocr's ``cv2.resize`` there (``resample``, the same
        bytes), one (frame size, input) per frame."""
        from .resample import bgr, cv2_resize_linear

        h, w = frames.shape[1:3]
        size = self._input_sizes.get((h, w))
        if size is None:  # rapidocr's rule (limit side, multiples of 32), read off its resize
            size = self._input_sizes[(h, w)] = self.preprocess.resize(np.zeros((h, w, 3), np.uint8)).shape[:2]
        return [((h, w), x) for x in cv2_resize_linear(bgr(frames), *size)]

    def _normalise(self, u8: Any) -> Any:
        """N x H x W x 3 uint8 -> N x 3 x H x W network input, rapidocr's arithmetic."""
        import torch

        x = u8.permute(0, 3, 1, 2).to(torch.float32) * self._scale
        return ((x.to(torch.float64) - self._mean) / self._std).to(torch.float32).to(self.dtype)

    def _forward(self, u8: Any) -> tuple[Any, Any]:
        out = self.net(self._normalise(u8))
        return out, out.float().amax(dim=(1, 2, 3))

    def _runner(self, b: int, h: int, w: int) -> tuple[Any, Any, Any, Any]:
        """(CUDA graph or None, static input, static map, static peak) for one padded shape.

        On CUDA the ~460 operations of the interpreted graph are captured once per
        shape and replayed with one launch; normalisation and the per-frame peak are
        in the graph too. If capture fails the detector runs eagerly (same values).
        """
        import torch

        key = (b, h, w)
        if key in self._compiled:
            return self._compiled[key]
        static_in = torch.zeros((b, h, w, 3), dtype=torch.uint8, device=self.device)
        entry: tuple[Any, Any, Any, Any] = (None, static_in, None, None)
        if self.graphs:
            captured = capture_cuda_graph(self._forward, static_in, "OCR detector")
            if captured is None:
                self.graphs = False
            else:
                graph, (out, peak) = captured
                entry = (graph, static_in, out, peak)
        self._compiled[key] = entry
        return entry

    def _detect(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        """Maps of the frames where some pixel may pass the DB threshold, and their positions.

        A frame whose probability map stays below rapidocr's box threshold everywhere
        (max of its ``thresh`` and ``box_thresh``) can have no box: no contour, or every
        contour's mean score is below ``box_thresh``. It skips the transfer and the
        post-processing (a margin of 1e-3 keeps that decision safe).
        """
        import torch

        n = len(inputs)
        cuda = self.device.startswith("cuda")
        with torch.inference_mode():
            x = stack_batch(inputs, pin=cuda)
            if cuda:
                h, w = x.shape[1:3]
                graph, static_in, out, peak = self._runner(bucket(n, self.batch_size), h, w)
                static_in[:n].copy_(x, non_blocking=True)
                if graph is not None:
                    graph.replay()
                else:
                    out, peak = self._forward(static_in)
            else:
                out, peak = self._forward(x)
            cand = np.flatnonzero(peak[:n].cpu().numpy() > self.thresh - 1e-3).tolist()
            self.gated[0] += n - len(cand)
            self.gated[1] += n
            if not cand:
                return np.empty((0, 1, *x.shape[1:3]), np.float32), []
            # fp16 maps come back as fp16 (half the bytes; the same values) and are widened to
            # float32 where they are post-processed (exact)
            sel = out[torch.tensor(cand, device=out.device)] if len(cand) < n else out[:n]
            return sel.cpu().numpy(), cand

    def _post_pool(self) -> Executor:
        """The post-processing workers (processes, or the threads when ``post_processes`` is 0)."""
        if self.post_processes == 0:
            return self._post
        if self._procs is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, wait

            # spawned: this process holds a CUDA context; the workers import rapidocr only
            self._procs = ProcessPoolExecutor(self.post_processes, mp_context=multiprocessing.get_context("spawn"),
                                              initializer=_init_post_process,
                                              initargs=(self.det.postprocess_op,))
            blank = np.zeros((1, 32, 32), np.float16)
            wait([self._procs.submit(_post_in_process, blank, [(32, 32)]) for _ in range(self.post_processes)])
        return self._procs

    def score_async(self, prepared: Sequence[tuple[tuple[int, int], np.ndarray]]) -> "Future[np.ndarray]":
        """Runs the networks now (this thread); returns a future of the text-area ratios.

        The maps that may hold a box go to the post-processing workers (rapidocr's DB
        post-processing, :func:`post_ratios`) and this returns at once, so the caller can
        launch the next networks while they work: the values are :meth:`score`'s.
        """
        pool = self._post_pool()
        parts: list[tuple[Future, list[int]]] = []
        for part in shape_batches(prepared, self.batch_size):
            maps, cand = self._detect([prepared[i][1] for i in part])
            if not cand:
                continue
            pos = [part[j] for j in cand]
            shapes = [tuple(prepared[i][0]) for i in pos]
            if pool is self._post:  # threads: one frame a task, as before
                parts += [(pool.submit(_post_in_thread, self.det.postprocess_op, maps[j:j + 1, 0], shapes[j:j + 1]),
                           pos[j:j + 1]) for j in range(len(pos))]
                continue
            step = -(-len(pos) // self.post_processes)  # one share per worker
            parts += [(pool.submit(_post_in_process, np.ascontiguousarray(maps[j:j + step, 0]), shapes[j:j + step]),
                       pos[j:j + step]) for j in range(0, len(pos), step)]
        return gather_ratios(parts, len(prepared), self.post_stats)

    def score(self, prepared: Sequence[tuple[tuple[int, int], np.ndarray]]) -> np.ndarray:
        """Text-area ratio per prepared frame."""
        return self.score_async(prepared).result()

    def close(self) -> None:
        """Stops the post-processing workers."""
        if self._procs is not None:
            self._procs.shutdown()
            self._procs = None

    def probability_maps(self, batch: np.ndarray) -> np.ndarray:
        """The detector's output (N x 1 x H x W, float32 on the host) for N x H x W x 3 uint8 frames."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            out = self.net(self._normalise(pad_to_bucket(x, self.batch_size) if self.device.startswith("cuda")
                                          else x))
            return out[:len(batch)].cpu().float().numpy()

    def warmup(self, example: tuple[tuple[int, int], np.ndarray]) -> None:
        """Capture (or plan) every padded batch shape once for frames like ``example`` (CUDA only)."""
        if self.device.startswith("cuda"):
            for b in bucket_sizes(self.batch_size):
                self._detect([example[1]] * b)
        self._post_pool()  # start the post-processing workers now, not on the first clips


def build_rapidocr(files: dict[str, Path], version: str = "", threads: int = 2, device: str = "auto",
                   half: bool = True, batch_size: int = 32, post_processes: int | None = None,
                   **_: Any) -> RapidOcrDetector:
    """Registry builder for ``rapidocr-ppocrv6-det``.

    On CUDA (``device`` "auto" with a GPU that torch sees, or "cuda[:N]") the detector
    runs on torch (:class:`TorchOcrDetector`); otherwise on onnxruntime's CPU provider,
    as before. ``device="torch-cpu"`` runs the torch path on the CPU in float32 (tests).
    """
    from spatialvid.models import get_model_spec, resolve_device

    version = version or get_model_spec("rapidocr-ppocrv6-det").version
    path = files[DET_FILE]
    if device == "torch-cpu":
        return TorchOcrDetector(path, version, "cpu", False, batch_size, threads, post_processes=post_processes)
    device = resolve_device(device)  # an explicit CUDA device that is not there fails here
    if device.startswith("cuda"):
        return TorchOcrDetector(path, version, device, half, batch_size, threads, post_processes=post_processes)
    return RapidOcrDetector(path, version, threads)
