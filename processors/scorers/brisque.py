"""Offline aesthetic PROXY: BRISQUE no-reference image quality (not the paper's model).

Machines without the LAION/CLIP weights still run all four filters with this
backend. It is a different measure on a different scale (0 = pristine .. 100 = badly
distorted, lower is better), so its rows carry the model id ``brisque-proxy``, the
value goes into ``aesthetic_proxy`` (never ``aesthetic``, which only the LAION model
fills), and the keep rule is its own threshold ``filters.brisque_max``.

The model: the BRISQUE SVR (RBF epsilon-SVR over 36 features, trained on LIVE) and
its feature ranges as shipped in the ``brisque`` pip package (``models/svm.txt``,
``models/normalize.pickle``). opencv-contrib's ``cv2.quality.QualityBRISQUE`` would
need ``brisque_model_live.yml`` / ``brisque_range_live.yml``, which the
opencv-contrib-python(-headless) 5.0 wheels do not ship (checked: only the module's
stubs are in the wheel), so that route is not offline.

The features are computed here exactly as that package computes them (its
``BRISQUE.score``: skimage grey, MSCN with a 7x7 Gaussian of sigma 7/6 and zero
padding, asymmetric generalised Gaussian fits of the MSCN map and its four pairwise
products, at full and half size), but with OpenCV filters instead of
``scipy.signal.convolve2d``, about 20x faster; the SVR is evaluated with numpy.
``tests/test_aesthetic.py`` checks the two agree on real frames (to about 0.02 on the
0..100 scale: in flat regions the MSCN coefficient is 0 up to rounding noise, and the
noise's sign, which differs between the two convolutions, moves it between the two
halves of the asymmetric fit).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from scipy import optimize, special

SVM_FILE = "models/svm.txt"
NORMALIZE_FILE = "models/normalize.pickle"
GREY = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray


def _gaussian_kernel(n: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    y, x = np.indices((n, n)) - n // 2
    k = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return k / k.sum()


_KERNEL = _gaussian_kernel()


def mscn(grey: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (zero padding, as ``convolve2d('same')``)."""
    mu = cv2.filter2D(grey, cv2.CV_64F, _KERNEL, borderType=cv2.BORDER_CONSTANT)
    sq = cv2.filter2D(grey * grey, cv2.CV_64F, _KERNEL, borderType=cv2.BORDER_CONSTANT)
    return (grey - mu) / (np.sqrt(np.abs(mu * mu - sq)) + 1 / 255)


def _phi(a: float) -> float:
    return special.gamma(2 / a) ** 2 / (special.gamma(1 / a) * special.gamma(3 / a))


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian fit: (alpha, mean, sigma_l, sigma_r)."""
    x = x.ravel()
    neg = x < 0
    left = np.sqrt(np.mean(x[neg] ** 2)) if neg.any() else 0.0
    right = np.sqrt(np.mean(x[~neg] ** 2)) if (~neg).any() else 0.0
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x * x)
    g = left / right
    big_r = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = float(optimize.root(lambda z: _phi(z) - big_r, [0.2]).x[0])
    const = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    mean = (right - left) * const * special.gamma(2 / alpha) / special.gamma(1 / alpha)
    return alpha, float(mean), float(left), float(right)


def scale_features(grey: np.ndarray) -> list[float]:
    """The 18 features of one scale: MSCN (alpha, variance) and 4 x (alpha, mean, var_l, var_r)."""
    m = mscn(grey)
    pairs = (m[:, :-1] * m[:, 1:], m[:-1, :] * m[1:, :], m[:-1, :-1] * m[1:, 1:], m[1:, :-1] * m[:-1, 1:])
    alpha, _, left, right = aggd_fit(m)
    feats = [alpha, (left**2 + right**2) / 2]
    for p in pairs:
        alpha, mean, left, right = aggd_fit(p)
        feats += [alpha, mean, left**2, right**2]
    return feats


def brisque_features(rgb: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of an RGB uint8 frame (full and half size)."""
    grey = (rgb.astype(np.float64) / 255.0) @ GREY
    half = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    return np.array(scale_features(grey) + scale_features(half))


class RbfSvr:
    """A libsvm epsilon-SVR with an RBF kernel, read from libsvm's text format."""

    def __init__(self, path: str | Path) -> None:
        header: dict[str, str] = {}
        coefs: list[float] = []
        rows: list[dict[int, float]] = []
        with open(path) as fh:
            for line in fh:
                if line.strip() == "SV":
                    break
                key, _, value = line.strip().partition(" ")
                header[key] = value
            for line in fh:
                parts = line.split()
                if not parts:
                    continue
                coefs.append(float(parts[0]))
                rows.append({int(i): float(v) for i, v in (p.split(":") for p in parts[1:])})
        if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
            raise ValueError(f"{path}: expected an epsilon_svr with an rbf kernel, got {header}")
        dim = max((max(r) for r in rows if r), default=0)
        self.sv = np.zeros((len(rows), dim))
        for i, r in enumerate(rows):
            for j, v in r.items():
                self.sv[i, j - 1] = v
        self.coef = np.array(coefs)
        self.gamma = float(header["gamma"])
        self.rho = float(header["rho"])
        if len(rows) != int(header.get("total_sv", len(rows))):
            raise ValueError(f"{path}: {len(rows)} support vectors, header says {header.get('total_sv')}")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions for rows of ``x`` (libsvm's ``svm_predict`` for regression)."""
        d2 = ((x[:, None, :] - self.sv[None, :, :]) ** 2).sum(-1)
        return np.exp(-self.gamma * d2) @ self.coef - self.rho


class BrisqueProxy:
    """BRISQUE per frame; mean over a clip's frames. Labelled as a proxy everywhere."""

    model_id = "brisque-proxy"
    is_proxy = True
    reduce = "mean"
    device = "cpu"

    def __init__(self, svm_path: str | Path, normalize_path: str | Path, version: str) -> None:
        self.svr = RbfSvr(svm_path)
        with open(normalize_path, "rb") as fh:
            params = pickle.load(fh)
        self.lo = np.asarray(params["min_"], np.float64)
        self.hi = np.asarray(params["max_"], np.float64)
        if self.lo.shape != (36,) or self.hi.shape != (36,) or self.svr.sv.shape[1] > 36:
            raise ValueError(f"{normalize_path}: expected 36 feature ranges for the BRISQUE SVR")
        # libsvm's text format leaves out zero entries: pad the support vectors to 36 features.
        self.svr.sv = np.pad(self.svr.sv, ((0, 0), (0, 36 - self.svr.sv.shape[1])))
        self.version = version

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """The scaled features (the heavy part; runs on the decode threads)."""
        return -1 + 2.0 / (self.hi - self.lo) * (brisque_features(rgb) - self.lo)

    def score(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        if not len(prepared):
            return np.empty(0)
        return self.svr.predict(np.stack(prepared))

    @staticmethod
    def verdict(value: float, filters: Any) -> tuple[bool, str]:
        """Keep when the mean BRISQUE <= ``filters.brisque_max`` (lower is better)."""
        if value > filters.brisque_max:
            return False, f"brisque-proxy {value:.1f} > {filters.brisque_max:g} (proxy for aesthetic)"
        return True, ""


def build_brisque(files: dict[str, Path], version: str = "", **_: Any) -> BrisqueProxy:
    """Registry builder for ``brisque-proxy``."""
    from spatialvid.models import get_model_spec

    return BrisqueProxy(files[SVM_FILE], files[NORMALIZE_FILE], version or get_model_spec("brisque-proxy").version)
