"""What crosses the broker: `JobMessage`, JSON only.

Never pickle: a pickle on a shared broker is remote code execution. This module imports
no torch, so producers stay light.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 2
# Versions this code reads: 1 had no store_id.
READABLE_VERSIONS = (1, 2)
# Job ids one message may carry: producers send at most DOCQA_WORKER_BATCH_JOBS (capped at
# this), so a message with more is not docqa's and is dead-lettered unread.
MAX_JOB_IDS = 4096
# Job ids are SQL INTEGER keys (PostgreSQL int4): anything else names no job.
JobId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class JobMessage(BaseModel):
    """What goes on the broker: only identifiers. The SQL job row is the source of truth."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    job_ids: list[JobId] = Field(min_length=1, max_length=MAX_JOB_IDS)
    # The store the jobs live in (store_info.store_id): a worker of another store refuses
    # the message instead of claiming unrelated jobs that happen to have the same ids.
    store_id: str | None = None

    @model_validator(mode="after")
    def _check_version(self) -> "JobMessage":
        if self.schema_version not in READABLE_VERSIONS:
            raise ValueError(
                f"message schema_version {self.schema_version} is not supported "
                f"(this worker reads versions {', '.join(map(str, READABLE_VERSIONS))})"
            )
        return self
