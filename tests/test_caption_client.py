"""The OpenAI-compatible chat client against a stand-in server speaking the real protocol:
retries on 429/5xx/timeouts, dead-letter-ready errors, re-asks on malformed JSON, empty
answers and refusals, structured-output downgrade, concurrency bound, accounting."""

from __future__ import annotations

import json
import threading
import time

import pytest

pytest.importorskip("httpx", reason="the caption client needs httpx (the caption extra)")

from spatialvid.processors.caption.client import (APIError, AnswerError, CaptionAPIError, ChatClient, Endpoint,
                                                  Usage, parse_json_answer)

from .caption_standin import Reply, StandInServer

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
MSG = [{"role": "user", "content": "Say a."}]


def need_a(obj: dict) -> str:
    if not isinstance(obj.get("a"), str) or not obj["a"]:
        raise ValueError("key a must be a non-empty string")
    return obj["a"]


def endpoint(server: StandInServer, **kw) -> Endpoint:
    base = dict(base_url=server.base_url, model="standin-model", timeout_s=5.0, max_retries=3, backoff_s=0.02,
                max_backoff_s=0.2, concurrency=4)
    base.update(kw)
    return Endpoint(**base)


# --------------------------------------------------------------------------- tolerant parser
@pytest.mark.parametrize("text, expected", [
    ('{"a": "x"}', {"a": "x"}),
    ('Sure! Here it is:\n```json\n{"a": "x", "b": [1, 2,],}\n```\nHope it helps.', {"a": "x", "b": [1, 2]}),
    ('The answer is {"a": "x"} as requested', {"a": "x"}),
    ('{"a": "the camera moves for', {"a": "the camera moves for"}),  # truncated at max_tokens
    ('{"a": ["one", "two"', {"a": ["one", "two"]}),
    ("{'a': 'x', 'b': None}", {"a": "x", "b": None}),
])
def test_tolerant_parser_recovers_the_object(text: str, expected: dict) -> None:
    assert parse_json_answer(text) == expected, text


@pytest.mark.parametrize("text, reason", [("", "empty"), ("   ", "empty"), ("I cannot help with that.", "no JSON object"),
                                          ("[1, 2, 3]", "expected a JSON object, got list"), ('{"a": "x" "b"}', "malformed JSON")])
def test_tolerant_parser_names_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_json_answer(text)


# --------------------------------------------------------------------------- wire protocol
def test_request_carries_model_key_and_json_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTION_TEST_KEY", "sk-test-123")
    with StandInServer(default=lambda s: Reply(content='{"a": "ok"}')) as srv:
        with ChatClient(endpoint(srv, api_key_env="CAPTION_TEST_KEY")) as client:
            usage = Usage()
            assert client.chat_json(MSG, SCHEMA, need_a, usage, name="t", seed=7) == "ok"
        (seen,) = srv.seen
    assert not seen.problems
    assert seen.headers["authorization"] == "Bearer sk-test-123"
    assert seen.body["model"] == "standin-model"
    assert seen.body["seed"] == 7 and seen.body["temperature"] == 0.1
    rf = seen.body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == SCHEMA and rf["json_schema"]["name"] == "t"
    assert usage.requests == 1 and usage.retries == 0 and usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_missing_api_key_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPTION_UNSET_KEY", raising=False)
    with pytest.raises(CaptionAPIError, match="CAPTION_UNSET_KEY"):
        ChatClient(Endpoint(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="CAPTION_UNSET_KEY"))


def test_rate_limit_is_retried_after_the_servers_wait() -> None:
    with StandInServer(default=lambda s: Reply(content='{"a": "ok"}')) as srv:
        srv.push(Reply(status=429, error="Rate limit reached", headers={"Retry-After": "0.3"}))
        with ChatClient(endpoint(srv)) as client:
            usage = Usage()
            t0 = time.monotonic()
            assert client.chat_json(MSG, SCHEMA, need_a, usage) == "ok"
            waited = time.monotonic() - t0
    assert usage.requests == 2 and usage.retries == 1
    assert waited >= 0.3, f"Retry-After 0.3 s not honoured (waited {waited:.2f} s)"


def test_server_errors_retry_then_fail_with_the_servers_message() -> None:
    with StandInServer(default=lambda s: Reply(status=503, error="model is overloaded, try later")) as srv:
        with ChatClient(endpoint(srv, max_retries=2)) as client:
            usage = Usage()
            with pytest.raises(APIError) as info:
                client.chat(MSG, usage)
        assert len(srv.seen) == 3
    assert info.value.status == 503
    assert "model is overloaded" in str(info.value) and "gave up after 3 attempts" in str(info.value)
    assert usage.retries == 2


def test_client_errors_are_not_retried() -> None:
    with StandInServer(default=lambda s: Reply(status=404, error="The model `standin-model` does not exist")) as srv:
        with ChatClient(endpoint(srv)) as client:
            with pytest.raises(APIError, match="does not exist") as info:
                client.chat(MSG, Usage())
        assert len(srv.seen) == 1
    assert info.value.status == 404 and not info.value.retryable


def test_timeout_is_retried() -> None:
    with StandInServer(default=lambda s: Reply(content='{"a": "ok"}')) as srv:
        srv.push(Reply(content='{"a": "late"}', delay_s=1.5))
        with ChatClient(endpoint(srv, timeout_s=0.5)) as client:
            usage = Usage()
            assert client.chat_json(MSG, SCHEMA, need_a, usage) == "ok"
    assert usage.retries == 1 and usage.requests == 2


def test_unreachable_server_fails_with_reason() -> None:
    with ChatClient(Endpoint(base_url="http://127.0.0.1:9/v1", model="m", max_retries=1, backoff_s=0.01)) as client:
        with pytest.raises(APIError, match="cannot reach http://127.0.0.1:9/v1"):
            client.chat(MSG, Usage())


# --------------------------------------------------------------------------- answers
def test_malformed_json_is_answered_with_a_reask_quoting_the_reason() -> None:
    with StandInServer(default=lambda s: Reply(content='{"a": "fixed"}')) as srv:
        srv.push(Reply(content='{"a": "broken" "b": }'))
        with ChatClient(endpoint(srv)) as client:
            usage = Usage()
            assert client.chat_json(MSG, SCHEMA, need_a, usage) == "fixed"
        second = srv.seen[1].body["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == '{"a": "broken" "b": }'
    assert "not usable" in second[2]["content"] and "malformed JSON" in second[2]["content"]
    assert usage.retries == 1


def test_empty_answer_and_invalid_values_are_retried() -> None:
    with StandInServer(default=lambda s: Reply(content='{"a": "good"}')) as srv:
        srv.push(Reply(content=""), Reply(content='{"a": ""}'))
        with ChatClient(endpoint(srv)) as client:
            assert client.chat_json(MSG, SCHEMA, need_a, Usage(), answer_retries=2) == "good"
        assert len(srv.seen) == 3


def test_refusals_end_in_an_answer_error_with_the_reason() -> None:
    with StandInServer(default=lambda s: Reply(content=None, refusal="I can't describe this video.")) as srv:
        with ChatClient(endpoint(srv)) as client:
            with pytest.raises(AnswerError, match="refusal: I can't describe this video") as info:
                client.chat_json(MSG, SCHEMA, need_a, Usage(), answer_retries=1)
        assert len(srv.seen) == 2
    assert "after 2 attempts" in str(info.value)


def test_unreadable_response_body_is_retried() -> None:
    with StandInServer(default=lambda s: Reply(content='{"a": "ok"}')) as srv:
        srv.push(Reply(raw=b"<html>502 Bad Gateway</html>"))
        with ChatClient(endpoint(srv)) as client:
            assert client.chat_json(MSG, SCHEMA, need_a, Usage()) == "ok"


def test_unsupported_structured_output_is_downgraded_and_remembered() -> None:
    with StandInServer(default=lambda s: Reply(content='{"a": "ok"}'), reject_formats=("json_schema",)) as srv:
        with ChatClient(endpoint(srv)) as client:
            assert client.chat_json(MSG, SCHEMA, need_a, Usage()) == "ok"
            assert client.chat_json(MSG, SCHEMA, need_a, Usage()) == "ok"
            assert client.structured_output == "json_object"
        kinds = [s.body["response_format"]["type"] for s in srv.seen]
    assert kinds == ["json_schema", "json_object", "json_object"]


# --------------------------------------------------------------------------- concurrency, cost
def test_concurrency_is_bounded_and_cost_is_counted() -> None:
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def slow(seen):  # runs on the server's request thread
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        return Reply(content=json.dumps({"a": "x" * 40}))

    with StandInServer(default=slow) as srv:
        with ChatClient(endpoint(srv, concurrency=2, price_in=2.0, price_out=8.0)) as client:
            usages = [Usage() for _ in range(6)]
            threads = [threading.Thread(target=client.chat_json, args=(MSG, SCHEMA, need_a, u)) for u in usages]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    assert state["peak"] == 2, f"expected at most 2 requests in flight, saw {state['peak']}"
    for u in usages:
        assert u.requests == 1
        assert u.cost_usd == pytest.approx((u.prompt_tokens * 2.0 + u.completion_tokens * 8.0) / 1e6)
        assert u.cost_usd > 0 and u.wait_s >= 0.1
