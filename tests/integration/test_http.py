"""The HTTP API through a real socket: a `docqa serve` process and httpx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from support import TINY_MODEL, Server, wait_for

TOKEN = "s3cret-token-0123456789"  # at least 16 characters: shorter ones are refused


@pytest.fixture
def embedded_server(tmp_path):
    env = dict(os.environ, DOCQA_DATABASE_URL=f"sqlite:///{tmp_path / 'api.db'}", DOCQA_MODEL=TINY_MODEL,
               DOCQA_DEVICE="cpu", DOCQA_API_TOKEN=TOKEN, DOCQA_API_MAX_BODY_BYTES="100000", HF_HUB_OFFLINE="1")
    server = Server(env, tmp_path / "serve.log")
    yield server
    server.stop()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_submit_wait_read_answers_with_token_and_limits(embedded_server):
    base = embedded_server.base
    assert httpx.get(base + "/v1/answers").status_code == 401
    assert httpx.get(base + "/v1/answers", headers={"Authorization": "Bearer wrong"}).status_code == 401
    body = {"documents": [{"id": "eiffel", "text": "The tower was designed by Gustave Eiffel.",
                           "metadata": {"city": "Paris"}},
                          "The Rhine flows to the North Sea.",
                          {"id": "broken", "text": 5}],
            "questions": ["Who designed it?"], "params": {"top_k": 2}}
    # DOCQA_API_WARM_UP's default: the model loads when the server starts, before any submission.
    wait_for(embedded_server.has_torch, timeout=60, what="the model loaded at start")
    started = time.monotonic()
    r = httpx.post(base + "/v1/submissions?wait=60", json=body, headers=AUTH, timeout=120)
    latency = time.monotonic() - started
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["finished"] and out["progress"]["done"] == 2 and out["new_jobs"] == 2
    assert len(out["errors"]) == 1 and "document broken" in out["errors"][0] and "text" in out["errors"][0]
    sid = out["submission_id"]
    assert httpx.get(f"{base}/v1/submissions/{sid}", headers=AUTH).json()["finished"]
    # Each job's best answer by default; every rank with all_ranks.
    best = httpx.get(f"{base}/v1/answers", params={"submission": sid}, headers=AUTH).json()["answers"]
    assert [a["rank"] for a in best] == [0, 0]
    page = httpx.get(f"{base}/v1/answers", params={"submission": sid, "limit": 3, "all_ranks": True},
                     headers=AUTH).json()
    last = page["answers"][-1]
    assert len(page["answers"]) == 3 and page["next_cursor"] == f"{last['answer_id']}:{last['document_id']}"
    rest = httpx.get(f"{base}/v1/answers", params={"submission": sid, "cursor": page["next_cursor"], "all_ranks": True},
                     headers=AUTH).json()
    assert len(rest["answers"]) == 1 and rest["next_cursor"] is None
    # Ordered by margin, paged with a cursor of that order: the pages together are the
    # whole ordering, highest margin first, each answer once.
    first = httpx.get(f"{base}/v1/answers", params={"order": "margin", "all_ranks": True, "limit": 2},
                      headers=AUTH).json()
    second = httpx.get(f"{base}/v1/answers", params={"order": "margin", "all_ranks": True, "limit": 2,
                                                     "cursor": first["next_cursor"]}, headers=AUTH).json()
    margins = [a["margin"] for a in first["answers"] + second["answers"]]
    assert len(margins) == 4 and margins == sorted(margins, reverse=True)
    assert len({a["answer_id"] for a in first["answers"] + second["answers"]}) == 4
    bad_cursor = httpx.get(f"{base}/v1/answers", params={"order": "margin", "cursor": "nonsense"}, headers=AUTH)
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.json()["detail"]
    # Metadata filter.
    paris = httpx.get(f"{base}/v1/answers", params={"where": "city=Paris"}, headers=AUTH).json()["answers"]
    assert [a["document_external_id"] for a in paris] == ["eiffel"]
    assert httpx.get(f"{base}/v1/answers", params={"where": "city=Rome"}, headers=AUTH).json()["answers"] == []
    assert httpx.get(f"{base}/v1/answers", params={"where": "city"}, headers=AUTH).status_code == 422
    eiffel = httpx.get(f"{base}/v1/answers", params={"document": "eiffel", "rank": 0}, headers=AUTH).json()["answers"]
    assert len(eiffel) == 1 and eiffel[0]["document_metadata"] == {"city": "Paris"} and "margin" in eiffel[0]
    with httpx.stream("GET", f"{base}/v1/answers", params={"submission": sid, "all_ranks": True},
                      headers={**AUTH, "Accept": "application/x-ndjson"}) as stream:
        lines = [json.loads(line) for line in stream.iter_lines() if line]
    assert len(lines) == 4
    # Limits, each refused with a message that names it.
    big = httpx.post(base + "/v1/submissions", json={"documents": ["word " * 40000], "questions": ["Q?"]},
                     headers=AUTH)
    assert big.status_code == 413 and "DOCQA_API_MAX_BODY_BYTES" in big.json()["detail"]
    long_q = httpx.post(base + "/v1/submissions", json={"documents": ["x"], "questions": ["why " * 400]},
                        headers=AUTH)
    assert long_q.status_code == 422 and "DOCQA_MAX_QUESTION_CHARS" in long_q.json()["detail"]
    bad_param = httpx.post(base + "/v1/submissions", json={"documents": ["x"], "questions": ["Q?"],
                                                           "params": {"top_k": 0}}, headers=AUTH)
    assert bad_param.status_code == 422 and "top_k" in bad_param.json()["detail"]
    # No question anywhere: a 422 that names the field and stores nothing.
    for body in ({"documents": ["x"], "questions": []}, {"documents": [{"id": "q", "text": "x"}]},
                 {"documents": ["x"], "questions": ["  "]}):
        none = httpx.post(base + "/v1/submissions", json=body, headers=AUTH)
        assert none.status_code == 422 and none.json()["detail"].startswith("questions: no question to ask")
        assert "-q" not in none.json()["detail"]
    emoji = httpx.post(base + "/v1/submissions?wait=60", headers=AUTH, timeout=90, json={
        "documents": [{"id": "astral", "text": "🚀🚀 The river flows north to the sea."}], "questions": ["Where?"]})
    assert emoji.status_code == 200 and emoji.json()["finished"]
    assert emoji.json()["submission_id"] == sid + 1  # the refused requests stored no submission
    (row,) = httpx.get(f"{base}/v1/answers", params={"document": "astral", "offsets": "utf16"},
                       headers=AUTH).json()["answers"]
    data = "🚀🚀 The river flows north to the sea.".encode("utf-16-le")
    assert row["offset_unit"] == "utf16" and data[2 * row["char_start"] : 2 * row["char_end"]].decode("utf-16-le") == row["text"]
    assert httpx.get(f"{base}/v1/answers", params={"offsets": "utf32"}, headers=AUTH).status_code == 422
    # Deletion: a dry run, then the document goes with its jobs and answers.
    dry = httpx.delete(f"{base}/v1/documents/eiffel", params={"dry_run": True}, headers=AUTH).json()
    assert dry["documents"] == 1 and dry["jobs"] == 1 and dry["answers"] == 2
    assert httpx.delete(f"{base}/v1/documents/eiffel", headers=AUTH).json()["answers"] == 2
    assert httpx.get(f"{base}/v1/answers", params={"document": "eiffel"}, headers=AUTH).json()["answers"] == []
    assert httpx.delete(f"{base}/v1/documents/eiffel", headers=AUTH).status_code == 404
    assert httpx.delete(f"{base}/v1/documents/eiffel").status_code == 401
    assert httpx.get(base + "/openapi.json").status_code == 401  # the schema too needs the token
    assert httpx.get(base + "/openapi.json", headers=AUTH).status_code == 200
    assert httpx.get(base + "/readyz").json()["status"] == "ready"
    print(f"\nHTTP ?wait= submission of 2 short documents, embedded (tiny model): {latency:.2f} s")


def test_serve_refuses_a_public_address_without_a_token(tmp_path):
    env = dict(os.environ, DOCQA_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    env.pop("DOCQA_API_TOKEN", None)
    out = subprocess.run([sys.executable, "-m", "docqa", "serve", "--host", "0.0.0.0"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "without a token" in out.stderr


def test_a_store_that_is_down_gives_503_not_a_crash(tmp_path):
    env = dict(os.environ, DOCQA_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:9/none",
               DOCQA_BROKER_URL="redis://127.0.0.1:9/0", DOCQA_API_TOKEN=TOKEN)
    server = Server(env, tmp_path / "down.log")
    try:
        assert httpx.get(server.base + "/readyz", timeout=30).status_code == 503
        r = httpx.post(server.base + "/v1/submissions", json={"documents": ["x"], "questions": ["Q?"]},
                       headers=AUTH, timeout=60)
        assert r.status_code == 503 and "store is unavailable" in r.json()["detail"]
        assert httpx.get(server.base + "/healthz").status_code == 200  # the process itself is up
    finally:
        server.stop()


def test_distributed_submission_answered_by_a_worker(distributed_env, workers, tmp_path):
    env = dict(distributed_env, DOCQA_API_TOKEN=TOKEN)
    workers.start(1)
    wait_for(lambda: "ready: model" in workers.logs(), timeout=120, what="a warm worker", logs=workers.logs)
    server = Server(env, tmp_path / "serve.log")
    try:
        assert httpx.get(server.base + "/readyz").json()["status"] == "ready"
        started = time.monotonic()
        r = httpx.post(server.base + "/v1/submissions?wait=60",
                       json={"documents": ["The Rhine flows to the North Sea."], "questions": ["Where?"]},
                       headers=AUTH, timeout=120)
        latency = time.monotonic() - started
        assert r.status_code == 200 and r.json()["finished"] and r.json()["progress"]["done"] == 1, r.text
        started = time.monotonic()
        again = httpx.post(server.base + "/v1/submissions?wait=60",
                           json={"documents": ["The Danube flows to the Black Sea."], "questions": ["Where?"]},
                           headers=AUTH, timeout=120)
        steady = time.monotonic() - started
        assert again.status_code == 200 and again.json()["finished"], again.text
        print(f"\nHTTP ?wait= submission of one short document, warm worker: {latency:.2f} s first, "
              f"{steady:.2f} s the next")
    finally:
        server.stop()
