"""A small client for the OpenAI-compatible chat API (``POST {base}/chat/completions``).

That one endpoint is what vLLM, SGLang, llama.cpp's server, Ollama and Gemini's
compatible endpoint all speak, so one client serves every caption step.

Why httpx and not the official ``openai`` package: we use one endpoint and need exact
control over what the SDK would hide or duplicate: our own retry policy (429, 5xx,
timeouts; ``Retry-After`` honoured) counted per clip, the server's error body carried
into the dead letter, server-specific request fields (llama.cpp's ``json_schema``
style ``response_format``) sent as plain JSON, and a downgrade of the structured-output
mode when a server rejects it. The SDK would add a second retry layer and several
dependencies for a ~200-line wire format. httpx gives a pooled, thread-safe, timeout-
aware synchronous client; the stage runs requests in threads, never on an event loop.

Layers:

* :meth:`ChatClient.chat`: one chat completion with HTTP retries and backoff; raises
  :class:`APIError` (status and body kept) when the server keeps failing.
* :meth:`ChatClient.chat_json`: asks for a JSON object (``response_format`` json_schema,
  then json_object, then plain text as the server allows), parses it tolerantly
  (:func:`parse_json_answer`), validates it, and re-asks with the reason on malformed
  JSON, empty answers, refusals or invalid values. Raises :class:`AnswerError` when the
  answers never become valid.

Token and cost accounting goes into a :class:`Usage` the caller passes per clip.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

STRUCTURED_MODES = ("json_schema", "json_object", "none")


class CaptionAPIError(RuntimeError):
    """Base of the errors of the caption client (each becomes a dead letter's reason)."""


class APIError(CaptionAPIError):
    """The server answered with an error (or not at all) after the retries.

    ``status`` is the HTTP status (0 for timeouts and connection errors); ``body`` the
    server's error text, which is what a user needs to see in the dead letter.
    """

    def __init__(self, message: str, status: int = 0, body: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retryable = retryable


class AnswerError(CaptionAPIError):
    """The server answered, but never with a usable JSON object (malformed, empty,
    refused, or values outside the schema) within the allowed re-asks."""


@dataclass(frozen=True)
class Endpoint:
    """One model behind one OpenAI-compatible base URL (``.../v1``)."""

    base_url: str
    model: str
    api_key_env: str = ""
    price_in: float = 0.0  # USD per million prompt tokens
    price_out: float = 0.0  # USD per million completion tokens
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    concurrency: int = 4
    structured_output: str = "json_schema"

    def api_key(self) -> str:
        """The key from the environment variable named by ``api_key_env`` ('' if unnamed)."""
        if not self.api_key_env:
            return ""
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise CaptionAPIError(
                f"the API key variable {self.api_key_env} is empty or unset; export it, or clear "
                f"caption.*_api_key_env for a server that needs no key ({self.base_url})"
            )
        return key


@dataclass
class Usage:
    """Token, request and cost accounting, summed over the calls of one clip."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    retries: int = 0
    wait_s: float = 0.0  # time spent waiting on the server (requests and backoff)
    cost_usd: float = 0.0
    models: list[str] = field(default_factory=list)

    def add(self, other: "Usage") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.requests += other.requests
        self.retries += other.retries
        self.wait_s += other.wait_s
        self.cost_usd += other.cost_usd
        for m in other.models:
            if m not in self.models:
                self.models.append(m)


@dataclass(frozen=True)
class ChatAnswer:
    """One completion: the message text, why it stopped, and the refusal if any."""

    text: str
    finish_reason: str
    refusal: str
    model: str


# --------------------------------------------------------------------------- tolerant JSON
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _balance(text: str) -> str:
    """Close an unterminated string and the open brackets of a truncated JSON text."""
    stack: list[str] = []
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    out = text
    if in_str:
        out += '"'
    out = out.rstrip().rstrip(",")
    if out.endswith(":"):
        out += " null"
    return out + "".join(reversed(stack))


def parse_json_answer(text: str) -> dict[str, Any]:
    """The JSON object in a model's answer, tolerating what small models and servers
    without structured output do: code fences, prose around the object, trailing
    commas, Python-style quotes and literals, and truncation (unclosed strings and
    brackets). Raises ValueError with the reason when no object can be recovered."""
    if not text or not text.strip():
        raise ValueError("empty answer")
    candidates: list[str] = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    start = text.find("{")
    if start >= 0:
        end = text.rfind("}")
        if end > start:
            candidates.append(text[start : end + 1])
        candidates.append(text[start:])  # possibly truncated
    errors: list[str] = []
    for cand in candidates:
        for fixed in (cand, _TRAILING_COMMA.sub(r"\1", cand), _balance(_TRAILING_COMMA.sub(r"\1", cand))):
            try:
                value = json.loads(fixed, strict=False)  # raw newlines in strings are common
            except json.JSONDecodeError as exc:
                errors.append(str(exc))
                continue
            if isinstance(value, dict):
                return value
            errors.append(f"expected a JSON object, got {type(value).__name__}")
        # Python-literal style ({'a': 'b', 'c': None}) as some models write it
        if cand.lstrip().startswith("{") and "'" in cand:
            try:
                import ast

                value = ast.literal_eval(_balance(cand))
                if isinstance(value, dict):
                    return {str(k): v for k, v in value.items()}
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
    if start < 0:
        not_object = [e for e in errors if e.startswith("expected a JSON object")]
        raise ValueError(f"{not_object[0] if not_object else 'no JSON object in the answer'}: {text.strip()[:120]!r}")
    raise ValueError(f"malformed JSON ({errors[-1] if errors else 'unknown'}): {text.strip()[:120]!r}")


# --------------------------------------------------------------------------- the client
class ChatClient:
    """A thread-safe client for one :class:`Endpoint`, at most ``concurrency`` requests in flight."""

    def __init__(self, endpoint: Endpoint, transport: Any = None) -> None:
        import httpx  # the caption extra; only needed when an endpoint is configured

        self.endpoint = endpoint
        self._key = endpoint.api_key()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        limits = httpx.Limits(max_connections=max(1, endpoint.concurrency), max_keepalive_connections=max(1, endpoint.concurrency))
        self._http = httpx.Client(base_url=endpoint.base_url.rstrip("/") + "/", headers=headers,
                                  timeout=httpx.Timeout(endpoint.timeout_s, connect=min(10.0, endpoint.timeout_s)),
                                  limits=limits, transport=transport)
        self._slots = threading.BoundedSemaphore(max(1, endpoint.concurrency))
        self._mode_lock = threading.Lock()
        self.structured_output = endpoint.structured_output if endpoint.structured_output in STRUCTURED_MODES else "none"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request, with HTTP retries ------------------------------------------------
    def chat(self, messages: list[dict[str, Any]], usage: Usage, *, temperature: float = 0.1,
             max_tokens: int = 1024, seed: int | None = None,
             response_format: dict[str, Any] | None = None) -> ChatAnswer:
        """One chat completion. Retries 429, 5xx, timeouts and connection errors with
        exponential backoff (``Retry-After`` honoured); raises :class:`APIError` with the
        server's status and body otherwise or when the retries run out."""
        import httpx

        ep = self.endpoint
        body: dict[str, Any] = {"model": ep.model, "messages": messages, "temperature": temperature,
                                "max_tokens": max_tokens}
        if seed is not None and seed >= 0:
            body["seed"] = seed
        if response_format is not None:
            body["response_format"] = response_format
        attempt = 0
        while True:
            t0 = time.monotonic()
            retry_after: float | None = None
            try:
                with self._slots:  # time queued for a slot counts as waiting on the server too
                    resp = self._http.post("chat/completions", json=body)
                usage.requests += 1
                usage.wait_s += time.monotonic() - t0
                if resp.status_code == 200:
                    try:
                        return self._answer(resp, usage)
                    except APIError as exc:  # a 200 whose body is not a completion (a proxy's page)
                        error = exc
                else:
                    text = resp.text[:2000]
                    retryable = resp.status_code == 429 or resp.status_code >= 500
                    if response_format is not None and _mentions_format(text) and resp.status_code != 429:
                        # the server rejects the structured-output request itself (llama-cpp-python
                        # answers 500 for it): retrying cannot help, a weaker mode can
                        retryable = False
                    error = APIError(f"HTTP {resp.status_code} from {ep.base_url} ({ep.model}): {_error_text(text)}",
                                     resp.status_code, text, retryable)
                    retry_after = _retry_after(resp.headers.get("retry-after"))
            except httpx.TimeoutException as exc:
                usage.requests += 1
                usage.wait_s += time.monotonic() - t0
                error = APIError(f"timeout after {ep.timeout_s:.0f} s from {ep.base_url} ({ep.model}): {type(exc).__name__}",
                                 0, "", True)
            except httpx.TransportError as exc:
                usage.requests += 1
                usage.wait_s += time.monotonic() - t0
                error = APIError(f"cannot reach {ep.base_url}: {type(exc).__name__}: {exc}", 0, "", True)
            if not error.retryable or attempt >= ep.max_retries:
                if error.retryable:
                    error.args = (f"{error.args[0]} (gave up after {attempt + 1} attempts)",)
                raise error
            attempt += 1
            usage.retries += 1
            delay = min(ep.max_backoff_s, ep.backoff_s * 2 ** (attempt - 1)) * (0.75 + 0.5 * random.random())
            if retry_after is not None:
                delay = min(max(delay, retry_after), max(ep.max_backoff_s, retry_after))
            log.info("caption: %s; retry %d/%d in %.1f s", error, attempt, ep.max_retries, delay)
            time.sleep(delay)
            usage.wait_s += delay

    def _answer(self, resp: Any, usage: Usage) -> ChatAnswer:
        ep = self.endpoint
        try:
            data = resp.json()
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise APIError(f"unreadable answer from {ep.base_url} ({ep.model}): {type(exc).__name__}: "
                           f"{resp.text[:200]!r}", resp.status_code, resp.text[:2000], True) from None
        u = data.get("usage") or {}
        pt, ct = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
        usage.prompt_tokens += pt
        usage.completion_tokens += ct
        usage.cost_usd += (pt * ep.price_in + ct * ep.price_out) / 1e6
        model = str(data.get("model") or ep.model)
        if ep.model not in usage.models:
            usage.models.append(ep.model)
        content = message.get("content")
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return ChatAnswer(text=content or "", finish_reason=str(choice.get("finish_reason") or ""),
                          refusal=str(message.get("refusal") or ""), model=model)

    # -- a validated JSON object -------------------------------------------------------
    def chat_json(self, messages: list[dict[str, Any]], schema: dict[str, Any], validate: Callable[[dict[str, Any]], T],
                  usage: Usage, *, name: str = "answer", temperature: float = 0.1, max_tokens: int = 1024,
                  seed: int | None = None, answer_retries: int = 2) -> T:
        """Ask for a JSON object matching ``schema``; return ``validate(obj)``.

        ``validate`` raises ValueError (pydantic's ValidationError is one) for an object
        it cannot use. Malformed JSON, an empty answer, a refusal or a failed validation
        is answered with a re-ask that quotes the reason, up to ``answer_retries`` times;
        then :class:`AnswerError`. A server that rejects ``response_format`` (HTTP 400
        naming it) is asked again with the next weaker mode, remembered for later calls.
        """
        convo = list(messages)
        reasons: list[str] = []
        for attempt in range(answer_retries + 1):
            answer = self._chat_structured(convo, schema, name, usage, temperature, max_tokens,
                                           None if seed is None or seed < 0 else seed + attempt)
            try:
                if answer.refusal:
                    raise ValueError(f"refusal: {answer.refusal[:200]}")
                if answer.finish_reason == "content_filter":
                    raise ValueError("the answer was withheld by the server's content filter")
                obj = parse_json_answer(answer.text)
                return validate(obj)
            except ValueError as exc:
                reason = _short(exc)
                reasons.append(reason)
                if attempt < answer_retries:
                    usage.retries += 1
                    log.info("caption: %s answer unusable (%s); asking again", name, reason)
                    if answer.text.strip():
                        convo = list(messages) + [
                            {"role": "assistant", "content": answer.text[:4000]},
                            {"role": "user", "content": f"That answer was not usable: {reason}. Answer again with "
                                                        f"only the JSON object, following the requested keys and values."},
                        ]
                    else:
                        convo = list(messages)
        raise AnswerError(f"{name}: no usable answer from {self.endpoint.model} at {self.endpoint.base_url} after "
                          f"{answer_retries + 1} attempts: " + " | ".join(reasons))

    def _chat_structured(self, messages: list[dict[str, Any]], schema: dict[str, Any], name: str, usage: Usage,
                         temperature: float, max_tokens: int, seed: int | None) -> ChatAnswer:
        while True:
            mode = self.structured_output
            if mode == "json_schema":
                rf: dict[str, Any] | None = {"type": "json_schema",
                                             "json_schema": {"name": name, "schema": schema, "strict": True}}
            elif mode == "json_object":
                rf = {"type": "json_object", "schema": schema}  # "schema": llama.cpp's extension
            else:
                rf = None
            try:
                return self.chat(messages, usage, temperature=temperature, max_tokens=max_tokens, seed=seed,
                                 response_format=rf)
            except APIError as exc:
                if mode == "none" or exc.retryable or not _mentions_format(exc.body):
                    raise
                weaker = STRUCTURED_MODES[STRUCTURED_MODES.index(mode) + 1]
                with self._mode_lock:
                    if self.structured_output == mode:
                        log.warning("caption: %s rejected response_format %s (%s); using %s from now on",
                                    self.endpoint.base_url, mode, _error_text(exc.body)[:120], weaker)
                        self.structured_output = weaker


def _mentions_format(body: str) -> bool:
    b = body.lower()
    return any(k in b for k in ("response_format", "json_schema", "json_object", "response format", "grammar"))


def _error_text(body: str) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``), else the text."""
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:500]
        return str(err)[:500]
    except (ValueError, AttributeError):
        return body.strip()[:500] or "(no body)"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _short(exc: BaseException) -> str:
    """One line for a re-ask and the dead letter (pydantic's errors without their URLs)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            parts = [f"{'.'.join(str(x) for x in e.get('loc', ())) or 'answer'}: {e.get('msg')}" for e in errors()]
            return "; ".join(parts)[:300]
        except Exception:  # not pydantic's: fall back to the text
            pass
    return str(exc).replace("\n", " ")[:300]
