"""No message stops a worker, and no message bounces forever: every malformed item, at every
layer kombu and Celery parse, is dead-lettered with its reason; redeliveries are counted and
bounded. Real Redis, PostgreSQL and `docqa worker` processes."""

from __future__ import annotations

import base64
import json

from support import answered_once, docqa, model_queue, open_repo, wait_for, write_corpus

QUESTION = "Where does the river flow?"


def _envelope(env) -> dict:
    """A real Celery envelope of a docqa message, as a producer would put it on the queue."""
    import redis

    from docqa.core.settings import Settings
    from docqa.worker.app import make_celery, send_jobs

    client = redis.Redis.from_url(env["DOCQA_BROKER_URL"])
    app = make_celery(Settings(broker_url=env["DOCQA_BROKER_URL"], queue=env["DOCQA_QUEUE"]))
    send_jobs(app, [1], "scratch-queue", None)
    return json.loads(client.rpop("scratch-queue"))


def _bad_messages(env, queue: str, store_id: str) -> None:
    """Twelve bad messages on the queue, at every layer a worker parses. kombu's: something
    that is not JSON, and four envelopes it cannot open. Celery's: a body that is not
    [args, kwargs, embed]. docqa's: an argument that is not a docqa message, an unknown schema
    version, job ids the store does not have, ids out of range (bad input, not a store
    outage), more ids than any producer sends, and more bytes than any docqa message has
    (set aside unread)."""
    import redis

    from docqa.core.settings import Settings
    from docqa.worker.app import TASK_NAME, make_celery, send_jobs

    client = redis.Redis.from_url(env["DOCQA_BROKER_URL"])
    client.lpush(queue, "not json {{{")
    not_base64 = _envelope(env)
    not_base64["body"] = "%%% this is not base64 %%%"
    no_delivery_info = _envelope(env)
    del no_delivery_info["properties"]["delivery_info"]
    no_exchange = _envelope(env)
    no_exchange["properties"]["delivery_info"] = {"routing_key": queue}
    odd_tag = _envelope(env)
    odd_tag["properties"]["delivery_tag"] = {"a": 1}
    not_a_task = _envelope(env)
    not_a_task["body"] = base64.b64encode(json.dumps({"x": 1}).encode()).decode()
    for envelope in (not_base64, no_delivery_info, no_exchange, odd_tag, not_a_task):
        client.lpush(queue, json.dumps(envelope))
    app = make_celery(Settings(broker_url=env["DOCQA_BROKER_URL"], queue=env["DOCQA_QUEUE"]))
    app.send_task(TASK_NAME, args=[{"hello": "world"}], queue=queue)
    app.send_task(TASK_NAME, args=[{"schema_version": 99, "job_ids": [1]}], queue=queue)
    send_jobs(app, [987654], queue, store_id)
    app.send_task(TASK_NAME, args=[{"schema_version": 2, "job_ids": [2**70, -5, 0]}], queue=queue)
    app.send_task(TASK_NAME, args=[{"schema_version": 2, "job_ids": list(range(1, 20_001))}], queue=queue)
    app.send_task(TASK_NAME, args=[{"schema_version": 2, "job_ids": list(range(1, 400_001))}], queue=queue)


def test_malformed_messages_at_every_layer_are_dead_lettered_and_the_worker_goes_on(distributed_env, workers,
                                                                                    tmp_path):
    """One worker meets twelve bad messages (`_bad_messages`) ahead of good jobs: it answers
    the jobs, dead-letters each bad message with its reason, and keeps running."""
    import redis

    from docqa.storage.db import ensure_schema

    env = distributed_env
    queue = model_queue(env)
    client = redis.Redis.from_url(env["DOCQA_BROKER_URL"])
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    ensure_schema(repo.engine)
    _bad_messages(env, queue, repo.store_id())
    workers.start(1)
    docs = tmp_path / "docs"
    write_corpus(docs, 6, seed=2, sizes=(40,))
    sub = docqa(["submit", str(docs), "-q", QUESTION], env)
    assert sub.returncode == 0, sub.stderr
    wait_for(lambda: repo.counts()["done"] == 6, timeout=120, what="6 jobs done", logs=workers.logs)
    answered_once(repo, 6)
    # The unknown ids' run may have filled its batch with the good jobs: its dead letter
    # then lands just after they are done.
    wait_for(lambda: client.llen("docqa.dead-letters") >= 12, timeout=30, what="12 dead letters", logs=workers.logs)
    assert workers.procs[0].poll() is None, "the worker stopped:\n" + workers.logs()
    entries = [json.loads(e) for e in client.lrange("docqa.dead-letters", 0, -1)]
    reasons = " | ".join(e["reason"] for e in entries)
    assert len(entries) == 12, reasons + "\n" + workers.logs()
    # kombu's layer: the item and its envelope
    assert "not JSON" in reasons
    assert "base64" in reasons and "delivery_info" in reasons and "exchange" in reasons and "delivery_tag" in reasons
    # Celery's layer: the body
    assert "malformed task message" in reasons
    # docqa's layer: the message and its ids
    assert "not a docqa job message" in reasons and "schema_version 99" in reasons
    assert "job ids unknown to store" in reasons and "987654" in reasons
    assert "job_ids.0" in reasons and "less than or equal to 2147483647" in reasons and "job_ids.1" in reasons
    assert "at most 4096" in reasons  # the ids a message may carry
    assert "bytes, over the limit" in reasons  # set aside before it was decoded
    logs = workers.logs(None)
    assert "Unrecoverable error" not in logs and "Connection to broker lost" not in logs
    assert "put back" not in logs and "store failed" not in logs  # bad input is not an outage
    assert client.llen(queue) == 0 and client.hlen("unacked") == 0
    # The operator's view.
    status = docqa(["status"], env)
    assert status.returncode == 0 and "dead letters: 12" in status.stdout, status.stdout
    listed = docqa(["dead-letters", "--limit", "2"], env)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 2 and "12 dead letters" in listed.stderr


UNGUARDED_TRANSPORT = '''
from kombu.transport import redis as kombu_redis
from kombu.utils.json import loads
from docqa.worker import transport


class Channel(transport.Channel):
    def _decode_item(self, item, queue):  # no checks: what kombu alone does
        return loads(item)


class Transport(kombu_redis.Transport):
    Channel = Channel
'''


def test_a_worker_that_stops_on_an_error_exits_non_zero(distributed_env, tmp_path):
    """A worker that stops without being asked to (here: a transport without docqa's checks
    meets a body that is not base64, Celery's "Unrecoverable error") exits 1, so a
    supervisor's restart-on-failure restarts it; before, it exited 0."""
    import os
    import subprocess
    import sys

    import redis

    env = dict(distributed_env)
    queue = model_queue(env)
    envelope = _envelope(env)
    envelope["body"] = "%%% not base64"
    redis.Redis.from_url(env["DOCQA_BROKER_URL"]).lpush(queue, json.dumps(envelope))
    (tmp_path / "unguarded_transport.py").write_text(UNGUARDED_TRANSPORT, encoding="utf-8")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from docqa.worker.app import app, run_worker\n"
        "app.conf.broker_transport = 'unguarded_transport:Transport'\n"
        "sys.exit(run_worker(app, ['worker', '--queues', sys.argv[2], '--pool', 'solo', '--without-gossip', "
        "'--without-mingle']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), queue], env=env, capture_output=True, text=True,
                         timeout=180, cwd=os.getcwd())
    assert "Unrecoverable error" in out.stderr, out.stderr[-3000:]
    assert out.returncode == 1


def test_a_message_that_keeps_bouncing_is_dead_lettered_and_jobs_the_broker_lost_come_back(
        distributed_env, workers, tmp_path):
    """Another store's message bounces a bounded number of times (status shows it meanwhile),
    then is dead-lettered; jobs whose messages the broker lost are sent again by the
    reconciler although that message kept the queue from draining."""
    import redis

    from docqa.core.settings import Settings
    from docqa.worker.app import make_celery, send_jobs

    env = dict(distributed_env, DOCQA_RECONCILE_SECONDS="8", DOCQA_MAX_REDELIVERIES="4")
    queue = model_queue(env)
    client = redis.Redis.from_url(env["DOCQA_BROKER_URL"])
    docs = tmp_path / "docs"
    write_corpus(docs, 5, seed=6, sizes=(40,))
    assert docqa(["submit", str(docs), "-q", QUESTION], env).returncode == 0
    client.delete(queue)  # the broker lost the jobs' messages
    app = make_celery(Settings(broker_url=env["DOCQA_BROKER_URL"], queue=env["DOCQA_QUEUE"]))
    send_jobs(app, [1], queue, "another-store")
    workers.env = env
    workers.start(1)
    # Every 2 s: each look is a `docqa status` process (about 0.6 CPU-seconds).
    status_seen = wait_for(lambda: "bouncing" in (out := docqa(["status"], env).stdout) and out, timeout=60,
                           interval=2, what="status to show the bouncing message", logs=workers.logs)
    assert "another-store" in status_seen
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    wait_for(lambda: repo.counts()["done"] == 5, timeout=120, what="5 jobs done without a command",
             logs=workers.logs)
    wait_for(lambda: client.llen("docqa.dead-letters") == 1, timeout=60, what="the bouncing message dead-lettered",
             logs=workers.logs)
    [entry] = [json.loads(e) for e in client.lrange("docqa.dead-letters", 0, -1)]
    assert "another-store" in entry["reason"] and "4 times" in entry["reason"]
    assert "bouncing" not in docqa(["status"], env).stdout
