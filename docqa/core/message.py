"""What crosses the broker: `JobMessage`, JSON only.

Never pickle: a pickle on a shared broker is remote code execution. This module imports
no torch, so producers stay light.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator

SCHEMA_VERSION = 1


class JobMessage(BaseModel):
    """What goes on the broker: only identifiers. The SQL job row is the source of truth."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    job_ids: list[int]

    @model_validator(mode="after")
    def _check_version(self) -> "JobMessage":
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"message schema_version {self.schema_version} is not supported "
                f"(this worker reads version {SCHEMA_VERSION})"
            )
        return self
