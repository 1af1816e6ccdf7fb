"""`dodai serve` with the real SmolLM2-135M-Instruct, through the official `openai` client."""

from __future__ import annotations

import base64
import json
import threading

import pytest

openai = pytest.importorskip("openai", reason="the openai client (test extra) is the reference for the API")

from dodai.generate.engine import Request, run_requests  # noqa: E402
from dodai.generate.processors import LogitsPipeline  # noqa: E402
from dodai.generate.session import chat_template_for, render_chat_ids, stop_ids_for  # noqa: E402
from dodai.serve.server import BackgroundServer, make_served  # noqa: E402

MODEL = "smollm2-135m-instruct"
pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def smol(smollm2_gguf):
    from _smollm2_once import smollm2

    return smollm2(str(smollm2_gguf))


@pytest.fixture(scope="module")
def server(smol, minilm_dir):
    model, tok = smol
    served = make_served(model, tok, MODEL, max_batch=16, context=512, embed_model=str(minilm_dir))
    with BackgroundServer(served) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def ask(text):
    return [{"role": "system", "content": "You are a concise assistant."}, {"role": "user", "content": text}]


def test_stream_equals_non_stream_and_greedy_equals_dodai_generate(client, smol):
    model, tok = smol
    msgs = ask("Name three colours of the rainbow.")
    r = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=40)
    text = r.choices[0].message.content
    s = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=40, stream=True,
                                       stream_options={"include_usage": True})
    chunks = list(s)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text and text.strip()
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    # the same rendered chat through the library's decode loop, token for token
    ids = render_chat_ids(chat_template_for(tok), tok, msgs)
    assert r.usage.prompt_tokens == len(ids)
    ref = run_requests(model, [Request(ids, 40, LogitsPipeline(temperature=0.0), stop_ids=stop_ids_for(tok),
                                       tokenizer=tok)])[0]
    assert text == ref.text and r.usage.completion_tokens == len(ref.ids)
    assert r.choices[0].finish_reason == ("stop" if ref.finish_reason == "eos" else "length")


def test_sixteen_concurrent_clients_each_get_what_they_get_alone(client):
    questions = [f"In one sentence, what is {x}?" for x in (
        "a cat", "the sun", "water", "a computer", "music", "a river", "Tokyo", "a book", "rain", "a bicycle",
        "bread", "the moon", "a tree", "coffee", "a bridge", "snow")]
    alone = {}
    for q in questions:  # one at a time
        r = client.chat.completions.create(model=MODEL, messages=ask(q), temperature=0, max_tokens=24)
        alone[q] = r.choices[0].message.content
    together, errors = {}, []

    def one(q):
        try:
            r = client.chat.completions.create(model=MODEL, messages=ask(q), temperature=0, max_tokens=24)
            together[q] = r.choices[0].message.content
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    assert together == alone


def test_seeded_sampling_is_reproducible_and_n_choices(client):
    kw = dict(model=MODEL, messages=ask("Write a short greeting."), temperature=0.9, top_p=0.95, max_tokens=20,
              seed=7)
    a = client.chat.completions.create(**kw, n=3)
    b = client.chat.completions.create(**kw, n=3)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert len({c.message.content for c in a.choices}) > 1  # three different draws


def test_logprobs_match_the_model(client, smol):
    model, tok = smol
    r = client.chat.completions.create(model=MODEL, messages=ask("Say hello."), temperature=0, max_tokens=6,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert 1 <= len(content) <= 6
    for x in content:
        assert x.logprob <= 0 and len(x.top_logprobs) == 3
        assert x.top_logprobs[0].logprob == pytest.approx(x.logprob, abs=1e-5)  # greedy: the chosen is the best
        assert x.top_logprobs[0].logprob >= x.top_logprobs[1].logprob >= x.top_logprobs[2].logprob


def test_json_schema_and_tools(client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "population": {"type": "integer"}}}
    r = client.chat.completions.create(
        model=MODEL, messages=ask("Give the largest city of Japan and its population as JSON."), temperature=0,
        max_tokens=60, response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    obj = json.loads(r.choices[0].message.content)
    assert list(obj) == ["city", "population"] and isinstance(obj["population"], int)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                               "parameters": {"type": "object", "properties": {
                                                   "city": {"type": "string"}}, "required": ["city"]}}}]
    r = client.chat.completions.create(model=MODEL, messages=ask("What is the weather in Paris?"), temperature=0,
                                       max_tokens=60, tools=tools, tool_choice="required")
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city"}
    # the tool's answer goes back as a "tool" message and the conversation continues
    msgs = ask("What is the weather in Paris?") + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 18, "sky": "clear"}'}]
    r2 = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=30, tools=tools,
                                        tool_choice="none")
    assert r2.choices[0].message.content and r2.choices[0].message.tool_calls is None


def test_embeddings_equal_dodai_encoder(client, minilm_dir):
    import torch

    from dodai.models.bert import load_sentence_encoder

    texts = ["A cat sat on the mat.", "猫がマットの上に座った。", "Stock prices fell sharply."]
    r = client.embeddings.create(model=str(minilm_dir), input=texts)
    got = torch.tensor([d.embedding for d in r.data])
    ref = load_sentence_encoder(str(minilm_dir)).encode(texts)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    assert r.usage.prompt_tokens > 0 and [d.index for d in r.data] == [0, 1, 2]
    b64 = client.embeddings.create(model=str(minilm_dir), input=texts[0], encoding_format="base64")
    raw = base64.b64decode(b64.data[0].embedding)  # little-endian float32, as OpenAI sends them
    torch.testing.assert_close(torch.frombuffer(bytearray(raw), dtype=torch.float32), got[0], atol=1e-6, rtol=1e-5)


def test_japanese_round_trip(client):
    r = client.chat.completions.create(model=MODEL, messages=ask("「こんにちは」は英語で何ですか？"), temperature=0,
                                       max_tokens=20, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in r if c.choices)
    assert text and "\ufffd" not in text  # streamed pieces never split a character
