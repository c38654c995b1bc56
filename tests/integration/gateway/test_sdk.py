"""tests/integration/gateway/test_sdk.py — the official openai and anthropic SDKs against a real
cortex-gateway in front of a fake neuron (conftest.py): what clients see, checked with the SDKs'
own parsers and stream accumulators, and what the neuron receives.
"""
import json
import urllib.request

import anthropic
import openai
import pytest

TOOLS = [{"name": "get_weather", "description": "Weather of a city",
          "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                           "properties": {"city": {"type": "string"}}, "required": ["city"],
                           "additionalProperties": False}}]


@pytest.fixture
def oa(gateway):
    return openai.OpenAI(base_url=gateway + "/v1", api_key=gateway.key, max_retries=0)


@pytest.fixture
def an(gateway):
    return anthropic.Anthropic(base_url=gateway, api_key=gateway.key, max_retries=0)


def test_models_in_both_forms(oa, an):
    assert [m.id for m in oa.models.list()] == ["tiny"]
    page = an.models.list()
    assert [m.id for m in page.data] == ["tiny"]
    assert page.data[0].type == "model" and page.data[0].created_at.year >= 2024
    assert oa.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("nope")


def test_openai_chat(oa, neuron):
    r = oa.chat.completions.create(model="tiny", max_completion_tokens=100000,
                                   messages=[{"role": "developer", "content": "Be brief."},
                                             {"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello there!"
    assert r.choices[0].finish_reason == "stop" and r.usage.prompt_tokens == 21
    sent = neuron.received[-1]
    assert sent["max_tokens"] == 8192 and sent["messages"][0] == {"role": "system",
                                                                  "content": "Be brief."}
    text, usage = [], None
    for c in oa.chat.completions.create(model="tiny", stream=True,
                                        stream_options={"include_usage": True},
                                        messages=[{"role": "user", "content": "hi"}]):
        if c.choices and c.choices[0].delta.content:
            text.append(c.choices[0].delta.content)
        usage = c.usage or usage
    assert "".join(text) == "Hello there!" and usage.completion_tokens == 5


def test_openai_tool_stream(oa):
    tools = [{"type": "function", "function": {"name": "get_weather",
                                               "parameters": TOOLS[0]["input_schema"]}}]
    with oa.chat.completions.stream(model="tiny", tools=tools,
                                    messages=[{"role": "user", "content": "weather?"}]) as s:
        for _ in s:
            pass
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert final.choices[0].finish_reason == "tool_calls"


def test_openai_errors(oa):
    with pytest.raises(openai.NotFoundError) as e:
        oa.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="tiny", n=2, messages=[{"role": "user", "content": "x"}])


def test_anthropic_message_and_stop_sequence(an):
    m = an.messages.create(model="claude-test-model", max_tokens=1000,
                           messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text == "Hello there!" and m.stop_reason == "end_turn"
    assert m.model == "claude-test-model" and m.id.startswith("msg_")
    assert m.usage.input_tokens == 21 and m.usage.output_tokens == 5
    m = an.messages.create(model="claude-test-model", max_tokens=100, stop_sequences=["3"],
                           messages=[{"role": "user", "content": "STOPSEQ"}])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == "3"
    with an.messages.stream(model="claude-x", max_tokens=100, stop_sequences=["3"],
                            messages=[{"role": "user", "content": "STOPSEQ"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "3"


def test_anthropic_tool_round_trip(an):
    with an.messages.stream(model="claude-test-model", max_tokens=1000, tools=TOOLS,
                            messages=[{"role": "user", "content": "weather in Paris?"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Let me check."
    assert [b.type for b in final.content] == ["text", "tool_use"]
    use = final.content[1]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    assert use.id.startswith("toolu_")
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens == 21 and final.usage.output_tokens == 5
    with an.messages.stream(model="claude-test-model", max_tokens=1000, tools=TOOLS, messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": final.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": "18C"}]}]) as s:
        answer = s.get_final_message()
    assert answer.content[0].text == "It is sunny." and answer.stop_reason == "end_turn"


def test_claude_code_shaped_request(an, neuron):
    tools = [{"name": f"tool_{i}", "description": f"tool number {i}",
              "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#",
                               "type": "object", "additionalProperties": False,
                               "properties": {"path": {"type": "string", "minLength": 1}},
                               "required": ["path"]}} for i in range(20)]
    system = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.0.1; cc_entrypoint=cli"},
              {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}]
    with an.beta.messages.stream(model="claude-code-test-model", max_tokens=64000,
                                 betas=["interleaved-thinking-2025-05-14", "unknown-beta-2099-01-01"],
                                 system=system, tools=tools, metadata={"user_id": "user_1"},
                                 messages=[{"role": "user", "content": [
                                     {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                     {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]) as s:
        final = s.get_final_message()
    assert final.content[0].text == "Hello there!"
    sent = neuron.received[-1]
    assert sent["max_tokens"] == 8192
    assert sent["messages"][0] == {"role": "system", "content": "You are Claude Code."}
    assert len(sent["tools"]) == 20
    assert sent["tools"][3]["function"]["parameters"] == tools[3]["input_schema"]
    count = an.beta.messages.count_tokens(model="claude-test-model", tools=tools, system=system,
                                          messages=[{"role": "user", "content": "hi"}])
    assert count.input_tokens == 1 + 1 + 20  # system, user, 20 tools (the fake's counting)
    assert neuron.received[-1]["messages"][0] == {"role": "system",
                                                  "content": "You are Claude Code."}


def test_anthropic_keepalive_during_slow_start(gateway):
    body = json.dumps({"model": "tiny", "max_tokens": 10, "stream": True,
                       "messages": [{"role": "user", "content": "SLOWSTART"}]}).encode()
    req = urllib.request.Request(gateway + "/v1/messages", data=body, headers={
        "Content-Type": "application/json", "anthropic-version": "2023-06-01",
        "x-api-key": gateway.key})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        assert r.headers["request-id"]
        lines = [l.decode().strip() for l in r]
    events = [l.split(": ", 1)[1] for l in lines if l.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert events.count("ping") >= 2  # the first, and at least one while the neuron was quiet
    # message_start reports the prompt tokens the neuron announced in X-Prompt-Tokens.
    start = json.loads(next(l for l in lines if l.startswith("data: "))[6:])
    assert start["type"] == "message_start"
    assert start["message"]["usage"]["input_tokens"] == 21


def test_anthropic_errors(an):
    with pytest.raises(anthropic.NotFoundError) as e:
        an.messages.create(model="gpt-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        an.messages.create(model="tiny", max_tokens=10,
                           messages=[{"role": "system", "content": "x"}])
    assert "messages[0].role" in e.value.message


def test_bad_key_raises_the_sdks_authentication_error(gateway):
    if gateway.key == "unused":
        pytest.skip("open mode: no API keys")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway + "/v1", api_key="cx_wrong", max_retries=0).models.list()
    with pytest.raises(anthropic.AuthenticationError) as e:
        anthropic.Anthropic(base_url=gateway, api_key="cx_wrong", max_retries=0).messages.create(
            model="tiny", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "authentication_error"
