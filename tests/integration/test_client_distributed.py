"""docqa.Client in distributed mode: submit from Python, workers answer, wait, read answers."""

from __future__ import annotations

from support import open_repo

import docqa


def test_client_submits_to_workers_and_follows_the_submission(distributed_env, workers):
    env = distributed_env
    workers.start(1)
    client = docqa.Client(env["DOCQA_DATABASE_URL"], env["DOCQA_BROKER_URL"], queue=env["DOCQA_QUEUE"],
                          model=env["DOCQA_MODEL"])
    assert not client.embedded
    docs = ({"id": f"d{i}", "text": f"River {i} flows north to the sea past mill {i}."} for i in range(30))
    sub = client.submit(docs, ["Where does the river flow?"])  # a generator: read lazily
    assert sub.summary.new_jobs == 30
    progress = sub.wait(timeout=180)
    assert progress == docqa.client.Progress(queued=0, running=0, done=30, failed=0)
    records = list(sub.answers())
    assert len(records) == 30 and {r.document_external_id for r in records} == {f"d{i}" for i in range(30)}
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    assert repo.counts()["done"] == 30
    # The worker's own process imported the model code before forking its pool (its pool
    # processes inherit it rather than import it again); its pool process loaded the model
    # and answered.
    main = workers.procs[0].pid
    with open(f"/proc/{main}/maps") as maps:
        assert "libtorch_cpu" in maps.read()
    assert "ForkPoolWorker-1] docqa worker process" in workers.logs(tail=None)
