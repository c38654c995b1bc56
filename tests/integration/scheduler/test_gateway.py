# tests/integration/scheduler/test_gateway.py — the whole cold-start path: a real cortex-gateway
# (--db, open mode) holds a request for a model that is loaded nowhere, records demand, the
# scheduler places it, the neuron loads it, and the held request completes; once through the
# openai SDK and once through the anthropic SDK, each for a model of its own.
import pytest

import fleet as F


def test_held_requests_complete_once_the_scheduler_loads_the_model(fleet):
    openai = pytest.importorskip("openai")
    anthropic = pytest.importorskip("anthropic")
    fleet.neuron("n1")
    fleet.neuron("n2")
    fleet.scheduler()
    gw = fleet.gateway()
    assert fleet.placements() == []

    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="unused", timeout=90,
                           max_retries=0)
    r = client.chat.completions.create(model="m1", max_tokens=4, temperature=0,
                                       messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].finish_reason in ("stop", "length"), r
    assert r.usage.completion_tokens > 0
    node = fleet.ready("m1")
    assert node is not None
    assert fleet.neurons[node].loaded() == {"m1": "ready"}

    client = anthropic.Anthropic(base_url=gw.base, api_key="unused", timeout=90, max_retries=0)
    m = client.messages.create(model="m2", max_tokens=4,
                               messages=[{"role": "user", "content": "Hi"}])
    assert m.type == "message" and m.stop_reason in ("end_turn", "max_tokens"), m
    assert m.usage.output_tokens > 0
    assert fleet.ready("m2") is not None

    # the gateway's demand drove both loads, and both requests were cold starts
    assert fleet.db.rows("SELECT model, detail->>'cause' FROM cortex.events"
                         " WHERE kind = 'scheduler.load' ORDER BY id") == [["m1", "demand"],
                                                                          ["m2", "demand"]]
    assert all(r[0] != "test" for r in fleet.db.rows("SELECT source FROM cortex.demand"))
    F.wait_for(lambda: fleet.db.rows("SELECT dialect, served_model, status_code, cold_start"
                                     " FROM cortex.requests ORDER BY served_model")
               == [["openai", "m1", "200", "t"], ["anthropic", "m2", "200", "t"]],
               15, "the gateway's request rows", gw)
