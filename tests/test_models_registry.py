"""The model registry: names, weights records, readiness, errors that say what to do, fetch."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

from spatialvid import models
from spatialvid.cli import main
from spatialvid.models import ModelError, ModelSpec, MissingWeights, WeightFile, Weights, fetch, get_model, list_models


def test_every_backend_has_a_version_files_a_license_and_a_builder() -> None:
    names = {s.name: s for s in list_models()}
    assert {"laion-aesthetic-vit-l14", "brisque-proxy", "rapidocr-ppocrv6-det"} <= set(names)
    for spec in names.values():
        assert spec.version and spec.weights.license and spec.weights.files and ":" in spec.builder, spec.name
    assert names["brisque-proxy"].proxy_for == "laion-aesthetic-vit-l14"
    assert names["laion-aesthetic-vit-l14"].proxy_for == ""
    assert [s.name for s in list_models("ocr")] == ["paddleocr-det", "rapidocr-ppocrv6-det"]


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="registered models: .*brisque-proxy"):
        get_model("no-such-model")


def test_missing_weights_name_the_file_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights) as err:
        get_model("laion-aesthetic-vit-l14", tmp_path)
    msg = str(err.value)
    assert "sac+logos+ava1-l14-linearMSE.pth" in msg and str(tmp_path / "ViT-L-14.pt") in msg
    assert "spatialvid models fetch laion-aesthetic-vit-l14" in msg


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving one folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(root))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def register_tmp(monkeypatch: pytest.MonkeyPatch, url: str, sha256: str) -> str:
    spec = ModelSpec(name="test-model", task="test", version="t1", builder="builtins:dict",
                     weights=Weights((WeightFile("w.bin", url=url, sha256=sha256),), source="a test", license="none"),
                     description="test")
    monkeypatch.setitem(models._REGISTRY, spec.name, spec)
    return spec.name


def test_fetch_downloads_checks_the_hash_and_installs(served, tmp_path: Path, monkeypatch) -> None:
    base, root = served
    (root / "w.bin").write_bytes(b"weights" * 1000)
    name = register_tmp(monkeypatch, f"{base}/w.bin", hashlib.sha256(b"weights" * 1000).hexdigest())
    (path,) = fetch(name, tmp_path / "wd")
    assert path.read_bytes() == b"weights" * 1000
    assert get_model(name, tmp_path / "wd") == {"w.bin": path}  # the builder gets the located files


def test_fetch_with_a_wrong_hash_leaves_nothing_behind(served, tmp_path: Path, monkeypatch) -> None:
    base, root = served
    (root / "w.bin").write_bytes(b"tampered")
    name = register_tmp(monkeypatch, f"{base}/w.bin", "0" * 64)
    with pytest.raises(ModelError, match="sha256"):
        fetch(name, tmp_path / "wd")
    assert list((tmp_path / "wd").iterdir()) == []


def test_fetch_without_network_says_to_copy_the_file_by_hand(tmp_path: Path, monkeypatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = register_tmp(monkeypatch, f"http://127.0.0.1:{port}/w.bin", "")
    with pytest.raises(ModelError, match=r"cannot download .* copy the file to .*w\.bin by hand"):
        fetch(name, tmp_path / "wd")
    assert not (tmp_path / "wd" / "w.bin").exists()


def test_cli_lists_readiness_and_explains_errors(tmp_path: Path, capsys) -> None:
    assert main(["models", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "laion-aesthetic-vit-l14" in out and "NOT READY" in out and "missing ViT-L-14.pt" in out
    assert "proxy for laion-aesthetic-vit-l14" in out
    assert main(["models", "fetch", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_a_backend_needing_a_setting_is_not_ready_until_it_is_set(tmp_path: Path, capsys, monkeypatch) -> None:
    """MegaSaM's files alone do not make it ready: it runs the command in annotate.megasam_command."""
    from spatialvid.config import load_config
    from spatialvid.models import model_status

    ckpt = tmp_path / "mega-sam" / "checkpoints" / "megasam_final.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    cfg = load_config(env={})
    status = model_status("megasam", tmp_path, cfg)
    assert not status.ready and status.unset == ["annotate.megasam_command"]
    assert any("SPATIALVID_ANNOTATE__MEGASAM_COMMAND" in p for p in status.problems(tmp_path))
    cfg.annotate.megasam_command = "python run.py {frames} {out}"
    assert model_status("megasam", tmp_path, cfg).ready
    monkeypatch.delenv("SPATIALVID_ANNOTATE__MEGASAM_COMMAND", raising=False)
    assert main(["models", "--task", "geometry", "--weights-dir", str(tmp_path)]) == 0
    assert "annotate.megasam_command is not set" in capsys.readouterr().out
    monkeypatch.setenv("SPATIALVID_ANNOTATE__MEGASAM_COMMAND", "python run.py {frames} {out}")
    assert main(["models", "--task", "geometry", "--weights-dir", str(tmp_path)]) == 0
    assert "megasam_command is not set" not in capsys.readouterr().out
