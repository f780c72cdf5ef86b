"""Several `docqa worker` processes on one host get node names of their own by default."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import TINY_MODEL


@pytest.mark.slow
@pytest.mark.services
def test_two_workers_on_one_host_have_distinct_node_names(tmp_path, redis_url, postgres_url):
    env = dict(os.environ, DOCQA_DATABASE_URL=postgres_url, DOCQA_BROKER_URL=redis_url, DOCQA_MODEL=TINY_MODEL,
               DOCQA_DEVICE="cpu", HF_HUB_OFFLINE="1", DOCQA_QUEUE="names-test")
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "docqa.cli", "worker", "--pool", "solo"], env=env,
                              stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
             for log in logs]
    try:
        deadline = time.monotonic() + 90
        names = []
        while time.monotonic() < deadline and len(names) < 2:
            names = [m.group(1) for log in logs
                     if (m := re.search(r"(docqa-\d+-[0-9a-f]{4}@\S+) v\d", log.read_text(errors="replace")))]
            time.sleep(0.5)
        assert len(names) == 2 and names[0] != names[1], [log.read_text(errors="replace")[-2000:] for log in logs]
        assert all("DuplicateNodenameWarning" not in log.read_text(errors="replace") for log in logs)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(60)
