"""Every tunable of docqa in one place, read from flags and DOCQA_* environment variables.

Built once at an entry point (CLI command, Celery worker start) and passed in; nothing
reads it from a global. Units are given per field.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.messages import AnswerParams

DEFAULT_MODEL = "distilbert-base-cased-distilled-squad"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCQA_", extra="ignore")

    database_url: str = Field(
        "sqlite:///docqa.db",
        description="SQLAlchemy URL of the result store (sqlite:///FILE or postgresql+psycopg://...)",
    )
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker URL (distributed mode)")
    queue: str = Field("docqa", description="broker queue the jobs go to")

    model: str = Field(DEFAULT_MODEL, description="hub id or local folder of an AutoModelForQuestionAnswering")
    revision: str | None = Field(None, description="model revision (branch, tag or commit) on the hub")
    device: str = Field("auto", description="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    dtype: str = Field("auto", description="auto (float32 on CPU, bfloat16/float16 on GPU), float32, float16, bfloat16")
    quantize: str = Field("none", description="none or int8 (dynamic int8 linear layers, CPU only)")

    max_seq_len: int = Field(384, description="tokens per window")
    doc_stride: int = Field(128, description="tokens two neighbouring windows share")
    top_k: int = Field(1, description="answers per question")
    max_answer_len: int = Field(15, description="longest answer, tokens")
    handle_impossible_answer: bool = Field(False, description="allow the empty answer")
    align_to_words: bool = Field(True, description="widen answers to whole words")
    merge_by_text: bool = Field(True, description="merge equal answer texts across windows (reference)")

    batch_tokens: int | None = Field(
        None,
        description="token budget of one forward batch (windows x padded length); "
        "default 1536 on CPU (a few windows: fastest there), 131072 on GPU",
        gt=0,
    )
    max_document_chars: int = Field(5_000_000, description="larger documents are refused, characters")
    max_attempts: int = Field(3, description="deliveries of a job before it is marked failed")
    lease_seconds: int = Field(900, description="a running job whose lease is older is requeued by the sweeper, seconds")
    worker_batch_jobs: int = Field(64, description="jobs a worker gathers before running a forward, at most")
    worker_flush_seconds: float = Field(0.5, description="longest a worker waits to fill a batch, seconds")

    def answer_params(self) -> AnswerParams:
        return AnswerParams(
            max_seq_len=self.max_seq_len,
            doc_stride=self.doc_stride,
            top_k=self.top_k,
            max_answer_len=self.max_answer_len,
            handle_impossible_answer=self.handle_impossible_answer,
            align_to_words=self.align_to_words,
            merge_by_text=self.merge_by_text,
        )
