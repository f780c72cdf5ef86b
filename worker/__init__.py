"""docqa worker side: the QA engine, span decoding and the Celery app.

Importing this package imports no torch: `docqa.core` (messages, settings)
are used by producers, which must stay light.
"""

import os

# OpenMP threads that spin while waiting make a forward several times slower (10x seen on
# 2 cores) as soon as anything else wants the CPU: another worker process, the database,
# the producer. Passive waiting costs little when the cores are free. Set before torch
# loads its OpenMP runtime; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
