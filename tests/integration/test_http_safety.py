"""The HTTP API under attack (issue 18, items 7-12), through a real socket: a `docqa serve`
process and httpx (or a raw socket where the framing is the subject)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from support import TINY_MODEL, Server, free_port, wait_for

TOKEN = "s3cret-token-for-tests-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUESTION = {"questions": ["Where does it flow?"]}


def embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # No warm-up: most of these servers never need the model, and loading it costs 3 CPU-s a
    # server; the ones that submit load it then (test_post_ask... checks that).
    env = dict(os.environ, DOCQA_DATABASE_URL=f"sqlite:///{tmp_path / 'api.db'}", DOCQA_MODEL=TINY_MODEL,
               DOCQA_DEVICE="cpu", DOCQA_API_TOKEN=TOKEN, HF_HUB_OFFLINE="1", DOCQA_API_WARM_UP="false")
    env.update(extra)
    return env


@pytest.fixture
def embedded_server(tmp_path):
    server = Server(embedded_env(tmp_path, DOCQA_API_MAX_BODY_BYTES="100000"), tmp_path / "serve.log")
    yield server
    server.stop()


@pytest.fixture
def pg_server(distributed_env, tmp_path):
    """A server on a PostgreSQL store (migrated) and a Redis broker, with no worker: jobs stay queued."""
    from docqa.storage.db import upgrade

    upgrade(distributed_env["DOCQA_DATABASE_URL"])
    server = Server(dict(distributed_env, DOCQA_API_TOKEN=TOKEN, DOCQA_API_MAX_WAITERS="50", DOCQA_API_WARM_UP="false"),
                    tmp_path / "serve.log")
    server.database_url = distributed_env["DOCQA_DATABASE_URL"]
    yield server
    server.stop()


def store_counts(url: str) -> dict[str, int]:
    from docqa.storage.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {table: conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
                    for table in ("submissions", "documents", "texts", "jobs")}
    finally:
        engine.dispose()


def refused_at_start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`docqa serve` run with `args`; fails the test if it is still serving after 30 s."""
    try:
        return subprocess.run([sys.executable, "-m", "docqa", "serve", "--port", str(free_port()), *args], env=env,
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"docqa serve {' '.join(args)} started instead of refusing") from None


# -- 7. tokens -------------------------------------------------------------------------------
def test_an_empty_or_short_token_is_refused_at_start_and_an_empty_bearer_never_matches(tmp_path, embedded_server):
    for token, host in (("", "127.0.0.1"), ("", "0.0.0.0"), ("short", "127.0.0.1"), ("fifteen-chars-x", "0.0.0.0")):
        out = refused_at_start(embedded_env(tmp_path, DOCQA_API_TOKEN=token), "--host", host)
        assert out.returncode == 2, (token, host, out.stderr)
        assert "DOCQA_API_TOKEN" in out.stderr and "16 characters" in out.stderr, out.stderr
    usage = subprocess.run([sys.executable, "-m", "docqa", "serve", "--help"], capture_output=True, text=True)
    assert "16 characters" in " ".join(usage.stdout.split())
    for header in ("Bearer", "bearer", "", "Basic x", "Bearer " + TOKEN[:-1]):  # (h11 strips trailing spaces)
        r = httpx.get(embedded_server.base + "/v1/answers", headers={"Authorization": header})
        assert r.status_code == 401, header


# -- 8. request bodies, whatever the framing ---------------------------------------------------------
def test_a_chunked_body_is_held_to_the_limit_while_it_is_read(embedded_server):
    # A chunked body under the limit is read as usual (and the server has loaded all it needs).
    small = iter([json.dumps({"documents": ["The Rhine flows to the North Sea."], **QUESTION}).encode()])
    ok = httpx.post(embedded_server.base + "/v1/submissions", content=small, timeout=120,
                    headers={**AUTH, "Content-Type": "application/json"})
    assert ok.status_code == 200, ok.text
    chunk = b'"' + b"x" * 65_534 + b'"'
    before = embedded_server.peak_rss_kib()

    def body():  # no Content-Length: httpx sends it chunked
        yield b'{"questions": ["Q?"], "documents": ['
        for _ in range(600):  # about 40 MB
            yield chunk + b","
        yield b'"end"]}'

    r = httpx.post(embedded_server.base + "/v1/submissions", content=body(), timeout=120,
                   headers={**AUTH, "Content-Type": "application/json"})
    grown_mib = (embedded_server.peak_rss_kib() - before) / 1024
    assert r.status_code == 413, r.text[:300]
    assert "DOCQA_API_MAX_BODY_BYTES" in r.json()["detail"] and "100,000" in r.json()["detail"]
    assert grown_mib < 10, f"the server grew by {grown_mib:.0f} MiB reading a 40 MB body it refused"
    print(f"\nchunked 40 MB body refused with 413; server peak memory grew {grown_mib:.1f} MiB")


# -- 9. waiting requests ----------------------------------------------------------------------------
def test_fifty_waiting_requests_leave_health_checks_answering(pg_server):
    body = {"documents": ["The Rhine flows to the North Sea."], **QUESTION}

    def wait_30() -> httpx.Response:
        return httpx.post(pg_server.base + "/v1/submissions?wait=30", json=body, headers=AUTH, timeout=60)

    pool = ThreadPoolExecutor(50)
    try:
        waits = [pool.submit(wait_30) for _ in range(50)]
        wait_for(lambda: store_counts(pg_server.database_url)["submissions"] >= 40, timeout=30,
                 what="40 submissions stored and waiting")
        try:
            started = time.monotonic()
            health = httpx.get(pg_server.base + "/healthz", timeout=5)
            took = time.monotonic() - started
            ready = httpx.get(pg_server.base + "/readyz", timeout=5)
        except httpx.TimeoutException:
            raise AssertionError("/healthz or /readyz did not answer within 5 s while ?wait= requests wait") from None
        assert health.status_code == 200 and ready.status_code == 200
        print(f"\n/healthz answered in {took * 1000:.0f} ms while ?wait=30 requests waited")
        wait_for(lambda: store_counts(pg_server.database_url)["submissions"] == 50, timeout=30,
                 what="all 50 submissions stored")
        assert not any(w.done() for w in waits), "a ?wait=30 request came back early"
        # One waiter too many: refused before anything is stored.
        extra = httpx.post(pg_server.base + "/v1/submissions?wait=30", json=body, headers=AUTH, timeout=10)
        assert extra.status_code == 503 and "DOCQA_API_MAX_WAITERS" in extra.json()["detail"], extra.text
        assert store_counts(pg_server.database_url)["submissions"] == 50
        # Without ?wait= a submission is still taken.
        assert httpx.post(pg_server.base + "/v1/submissions", json=body, headers=AUTH, timeout=10).status_code == 200
        too_long = httpx.post(pg_server.base + "/v1/submissions?wait=100000", json=body, headers=AUTH, timeout=10)
        assert too_long.status_code == 422 and "DOCQA_API_MAX_WAIT_SECONDS" in too_long.text
    finally:  # killed: a graceful stop would wait for the 50 waits to end
        pg_server.proc.kill()
        pg_server.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        pg_server.stop = lambda: None


# -- 10. bad input ------------------------------------------------------------------------------------
BIG = str(2**63)
OVER_INTEGER = str(2**31)  # the store's ids are INTEGER: 32-bit on PostgreSQL


def test_bad_query_input_is_a_422_naming_the_parameter(pg_server):
    base = pg_server.base
    asks = [
        ("GET", "/v1/answers", {"where": "lang=e\x00n"}, "where"),
        ("GET", "/v1/answers", {"document": "a\x00b"}, "document"),
        ("GET", "/v1/answers", {"model": "m\x00"}, "model"),
        ("GET", "/v1/answers", {"question": "Who\x00?"}, "question"),
        ("GET", "/v1/answers", {"submission": BIG}, "submission"),
        ("GET", "/v1/answers", {"document": BIG}, "document"),
        ("GET", "/v1/answers", {"rank": BIG}, "rank"),
        ("GET", "/v1/answers", {"cursor": f"{BIG}:1"}, "cursor"),
        ("GET", f"/v1/submissions/{BIG}", {}, "submission_id"),
        ("GET", f"/v1/submissions/{OVER_INTEGER}", {}, "submission_id"),
        ("GET", "/v1/answers", {"submission": OVER_INTEGER}, "submission"),
        ("GET", "/v1/answers", {"document": OVER_INTEGER}, "document"),
        ("GET", "/v1/answers", {"cursor": f"1:{OVER_INTEGER}"}, "cursor"),
        ("DELETE", f"/v1/documents/{OVER_INTEGER}", {}, "ref"),
        ("DELETE", "/v1/documents", {"document": "\u00b2"}, "document"),
        ("DELETE", "/v1/documents/a%00b", {}, "ref"),
        ("DELETE", f"/v1/documents/{BIG}", {}, "ref"),
        ("DELETE", "/v1/documents", {"path": "/tmp/a\x00b"}, "path"),
        ("DELETE", "/v1/documents", {"id": "a\x00b"}, "id"),
    ]
    for method, path, params, name in asks:
        r = httpx.request(method, base + path, params=params, headers=AUTH, timeout=30)
        assert r.status_code == 422, (path, params, r.status_code, r.text)
        assert name in json.dumps(r.json()["detail"]), (path, params, r.text)
    assert store_counts(pg_server.database_url)["submissions"] == 0


def test_a_bad_question_stores_nothing_and_bad_documents_are_reported_by_index(pg_server):
    base = pg_server.base
    for questions, name in ((["fine?", "bad\x00?"], "questions[1]"), (["\ud800?"], "questions[0]")):
        r = httpx.post(base + "/v1/submissions", headers={**AUTH, "Content-Type": "application/json"},
                       content=json.dumps({"documents": ["The Rhine flows north."], "questions": questions}))
        assert r.status_code == 422 and name in r.json()["detail"], r.text
    # Not one document that can be stored: a 422 naming them, and nothing stored either.
    for documents in ([], ["nul \x00"], ["\ud800", {"id": "m", "text": "t", "metadata": {"n": float("inf")}}]):
        r = httpx.post(base + "/v1/submissions", headers={**AUTH, "Content-Type": "application/json"},
                       content=json.dumps({"documents": documents, **QUESTION}))
        assert r.status_code == 422 and r.json()["detail"].startswith("documents: "), r.text
    # A field the API does not know, holding a lone surrogate, is named (not a 500).
    r = httpx.post(base + "/v1/submissions", headers={**AUTH, "Content-Type": "application/json"},
                   content=json.dumps({"documents": ["x"], **QUESTION, "bogus": "\ud800"}))
    assert r.status_code == 422 and "bogus" in r.text, r.text
    assert store_counts(pg_server.database_url) == {"submissions": 0, "documents": 0, "texts": 0, "jobs": 0}
    documents = [
        "The Rhine flows to the North Sea.",
        "nul \x00 in the text",
        "a lone \ud800 surrogate",
        {"id": "nul\x00id", "text": "An id with NUL."},
        {"id": "meta", "text": "Metadata with NUL.", "metadata": {"k": "v\x00"}},
        {"id": "own", "text": "Its own question.", "questions": ["why\x00?"]},
        {"id": "inf", "text": "A number JSON cannot write.", "metadata": {"n": float("-inf")}},
        {"id": os.urandom(3000).hex(), "text": "An id over PostgreSQL's index row size."},
        {"id": "good", "text": "The Danube flows to the Black Sea."},
    ]
    r = httpx.post(base + "/v1/submissions", headers={**AUTH, "Content-Type": "application/json"},
                   content=json.dumps({"documents": documents, **QUESTION}))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["documents"] == 2 and out["jobs"] == 2, out
    assert [e.split(":")[0] for e in out["errors"]] == ["document 1", "document 2", "document 3", "document meta",
                                                        "document own", "document inf", "document 7"], out["errors"]
    assert store_counts(pg_server.database_url) == {"submissions": 1, "documents": 2, "texts": 2, "jobs": 2}


# -- 11. models ---------------------------------------------------------------------------------------
def test_a_model_the_server_is_not_configured_for_is_refused(tmp_path):
    from docqa.storage.db import upgrade

    upgrade(f"sqlite:///{tmp_path / 'api.db'}")
    server = Server(embedded_env(tmp_path), tmp_path / "serve.log")
    try:
        for model in ("/etc", "../../etc/passwd", "gpt2", TINY_MODEL + "/"):
            r = httpx.post(server.base + "/v1/submissions", json={"documents": ["x y"], **QUESTION, "model": model},
                           headers=AUTH, timeout=60)
            assert r.status_code == 422, (model, r.text)
            assert "model" in r.json()["detail"] and "DOCQA_API_MODELS" in r.json()["detail"], r.text
        # The Client's own options cannot be smuggled in as answer parameters.
        for smuggled in ({"check_model": False}, {"revision": "evil"}, {"priority": 99}, {"label": "x"},
                         {"retry_failed": True}, {"model": "gpt2"}):
            r = httpx.post(server.base + "/v1/submissions", headers=AUTH, timeout=60,
                           json={"documents": ["x y"], **QUESTION, "params": {"top_k": 2, **smuggled}})
            assert r.status_code == 422 and "is not an answer parameter" in r.json()["detail"], (smuggled, r.text)
        assert store_counts(f"sqlite:///{tmp_path / 'api.db'}")["submissions"] == 0
        ok = httpx.post(server.base + "/v1/submissions?wait=60", headers=AUTH, timeout=120,
                        json={"documents": ["The Rhine flows to the North Sea."], **QUESTION, "model": TINY_MODEL})
        assert ok.status_code == 200 and ok.json()["finished"], ok.text
    finally:
        server.stop()


# -- 12. exposure -------------------------------------------------------------------------------------
def test_unavailable_store_and_broker_details_stay_in_the_server_log(tmp_path, postgres_url):
    secret_db = "postgresql+psycopg://secretuser:hunter2hunter2@127.0.0.1:5432/secretdb"
    server = Server(dict(os.environ, DOCQA_DATABASE_URL=secret_db, DOCQA_BROKER_URL="redis://127.0.0.1:9/0",
                         DOCQA_API_TOKEN=TOKEN), tmp_path / "store.log")
    try:
        bodies = [httpx.get(server.base + "/readyz", timeout=30),
                  httpx.post(server.base + "/v1/submissions", json={"documents": ["x"], **QUESTION}, headers=AUTH,
                             timeout=60),
                  httpx.get(server.base + "/v1/answers", headers=AUTH, timeout=30)]
        for r in bodies:
            assert r.status_code == 503 and "store is unavailable" in r.text, r.text
            for detail in ("secretuser", "secretdb", "127.0.0.1", "5432", "hunter2"):
                assert detail not in r.text, (detail, r.text)
    finally:
        server.stop()
    assert "secretuser" in server.logs() and "hunter2" not in server.logs()
    # A reachable store and a broker that is down: the broker's address is not told either.
    broker_down = dict(os.environ, DOCQA_DATABASE_URL=postgres_url, DOCQA_API_TOKEN=TOKEN, DOCQA_MODEL=TINY_MODEL,
                       DOCQA_BROKER_URL="redis://:brokerpass@127.0.0.1:9/0", HF_HUB_OFFLINE="1")
    server = Server(broker_down, tmp_path / "broker.log")
    try:
        r = httpx.get(server.base + "/readyz", timeout=30)
        assert r.status_code == 503 and "broker" in r.text, r.text
        assert "127.0.0.1" not in r.text and ":9" not in r.text and "brokerpass" not in r.text, r.text
        r = httpx.post(server.base + "/v1/submissions", json={"documents": ["x y"], **QUESTION}, headers=AUTH,
                       timeout=120)
        assert r.status_code == 503 and "submission 1 is stored" in r.text, r.text
        assert "127.0.0.1" not in r.text and ":9" not in r.text and "brokerpass" not in r.text, r.text
    finally:
        server.stop()


def test_the_schema_and_docs_need_the_token_when_one_is_set(embedded_server, tmp_path):
    base = embedded_server.base
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert httpx.get(base + path).status_code == 401, path
    assert httpx.get(base + "/openapi.json", headers=AUTH).json()["info"]["title"] == "docqa"
    assert httpx.get(base + "/docs", headers=AUTH).status_code == 200
    assert httpx.get(base + "/readyz").json() == {"status": "ready"}  # job counts only with the token
    assert "counts" in httpx.get(base + "/readyz", headers=AUTH).json()


def test_a_tokenless_server_answers_only_to_loopback_host_names(tmp_path):
    env = embedded_env(tmp_path)
    env.pop("DOCQA_API_TOKEN")
    server = Server(env, tmp_path / "serve.log")
    try:
        for host in ("evil.example", "evil.example:%d" % server.port, "127.0.0.1.nip.io", "10.0.0.1"):
            r = httpx.get(server.base + "/v1/answers", headers={"Host": host})
            assert r.status_code == 421 and "Host" in r.json()["detail"], (host, r.text)
            assert httpx.get(server.base + "/openapi.json", headers={"Host": host}).status_code == 421
        for host in ("localhost", f"localhost:{server.port}", "127.0.0.1", f"127.0.0.1:{server.port}",
                     f"[::1]:{server.port}"):
            assert httpx.get(server.base + "/v1/answers", headers={"Host": host}).status_code == 200, host
        assert httpx.get(server.base + "/openapi.json").status_code == 200
    finally:
        server.stop()


def test_a_connection_that_sends_its_headers_slowly_is_closed(tmp_path):
    server = Server(embedded_env(tmp_path, DOCQA_API_HEADER_TIMEOUT_SECONDS="2"), tmp_path / "serve.log")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.settimeout(0.25)
            started = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            closed = False
            while not closed and time.monotonic() - started < 20:
                try:
                    sock.sendall(b"X")  # one byte of a header line every 0.25 s, never its end
                    closed = sock.recv(4096) == b""
                except socket.timeout:
                    continue
                except OSError:
                    closed = True
            elapsed = time.monotonic() - started
        assert closed and elapsed < 10, f"a slow header sender held its connection for {elapsed:.1f} s"
        # Headers in time, then a body that stops arriving: 408 once it has stalled for the timeout.
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            started = time.monotonic()
            sock.sendall(b"POST /v1/submissions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                         + TOKEN.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            answer = sock.recv(4096)
            elapsed = time.monotonic() - started
            while b"}" not in answer and (more := sock.recv(4096)):  # the body may come in a segment of its own
                answer += more
        assert answer.startswith(b"HTTP/1.1 408") and b"DOCQA_API_HEADER_TIMEOUT_SECONDS" in answer, answer
        assert elapsed < 10, f"a stalled body held its request for {elapsed:.1f} s"
        assert httpx.get(server.base + "/healthz").status_code == 200
    finally:
        server.stop()


def test_worker_metrics_bind_loopback_unless_told_otherwise(tmp_path):
    code = ("import sys; from docqa.core.settings import Settings; from docqa.worker import metrics; "
            f"s = metrics.serve(Settings(database_url='sqlite:///{tmp_path / 'm.db'}', metrics_port={{port}})); "
            "print(s.httpd.server_address[0])")
    env = dict(os.environ)
    env.pop("DOCQA_METRICS_HOST", None)
    out = subprocess.run([sys.executable, "-c", code.format(port=free_port())], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "127.0.0.1", out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-c", code.format(port=free_port())], capture_output=True, text=True,
                         env=dict(env, DOCQA_METRICS_HOST="0.0.0.0"), timeout=60)
    assert out.stdout.strip() == "0.0.0.0", out.stdout + out.stderr
    usage = subprocess.run([sys.executable, "-m", "docqa", "worker", "--help"], capture_output=True, text=True)
    assert "--metrics-host" in usage.stdout
    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    # The monitoring profile's Prometheus scrapes the workers from its own container.
    assert compose["x-docqa-env"]["DOCQA_METRICS_HOST"] == "0.0.0.0"



# -- corpus questions (issue 22) ------------------------------------------------------------------
def test_post_ask_answers_from_every_document_with_the_token_and_refuses_bad_input_by_name(embedded_server):
    base = embedded_server.base
    # DOCQA_API_WARM_UP=false: no model in the server until a submission needs it (a warm-up
    # would have imported torch within these seconds).
    assert httpx.get(base + "/v1/answers", headers=AUTH).status_code == 200
    time.sleep(3)
    assert not embedded_server.has_torch()
    docs = [{"id": "seine", "text": "The river Seine flows west through Paris to the sea.", "metadata": {"lang": "en"}},
            {"id": "rhine", "text": "The Rhine flows north past Basel and Cologne.", "metadata": {"lang": "de"}},
            {"id": "same", "text": "The river Seine flows west through Paris to the sea.", "metadata": {"lang": "fr"}}]
    r = httpx.post(base + "/v1/submissions?wait=60", json={"documents": docs, "questions": ["Where does it flow?"]},
                   headers=AUTH, timeout=90)
    assert r.status_code == 200 and r.json()["finished"], r.text
    assert embedded_server.has_torch()
    assert httpx.post(base + "/v1/ask", json={"question": "Where does the river flow?"}).status_code == 401
    r = httpx.post(base + "/v1/ask", json={"question": "Which river is in Paris?", "top": 5}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {a["external_id"] for a in body["answers"]} == {"seine", "same"}  # the Rhine has no 'river' or 'Paris'
    for a in body["answers"]:
        text = docs[0]["text"]
        assert text[a["answer"]["char_start"]:a["answer"]["char_end"]] == a["answer"]["text"]
        assert a["retrieval_score"] > 0 and a["path"] == f"document {a['external_id']}" and a["version"] == 1
    r = httpx.post(base + "/v1/ask", json={"question": "flows", "where": {"lang": "de"}}, headers=AUTH, timeout=60)
    assert [a["external_id"] for a in r.json()["answers"]] == ["rhine"]
    for question in ["'; DROP TABLE passages; --", 'NEAR("river" Seine) OR *', "river & | ! :* <->", "東京 café e\u0301"]:
        r = httpx.post(base + "/v1/ask", json={"question": question}, headers=AUTH, timeout=60)
        assert r.status_code == 200, (question, r.text)
    for bad, named in [({"question": "q", "windows": 0}, "windows"), ({"question": "q", "top": 100000}, "top"),
                       ({"question": ""}, "question"), ({"question": "q", "extra": 1}, "extra"),
                       ({"question": "q\x00"}, "question"), ({"question": "q", "where": {'a"b': "x"}}, "metadata key"),
                       ({"question": "q", "params": {"top_k": 0}}, "top_k"),
                       ({"question": "q", "params": {"no_such": 1}}, "no_such")]:
        r = httpx.post(base + "/v1/ask", json=bad, headers=AUTH, timeout=60)
        assert r.status_code == 422 and named in r.text, (bad, r.status_code, r.text)
    r = httpx.post(base + "/v1/ask", json={"question": "Which river is in Paris?"}, headers=AUTH, timeout=60)
    assert {a["external_id"] for a in r.json()["answers"]} == {"seine", "same"}  # nothing was lost on the way
