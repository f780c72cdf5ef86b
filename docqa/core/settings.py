"""Every tunable of docqa in one place, read from flags and DOCQA_* environment variables.

Built once at an entry point (CLI command, Celery worker start, `docqa.Client`) and passed
in; nothing else reads DOCQA_* variables. Units are given per field. The answer
parameters are not spelled here: they are `AnswerParams`' fields, copied in with their
descriptions and bounds, so a new answer parameter is declared once.

`python -m docqa.core.settings` prints the README's configuration table;
`python -m docqa.core.settings README.md` rewrites it there.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, SecretStr, create_model
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from docqa.core.labels import queue_for
from docqa.core.params import AnswerParams

DEFAULT_MODEL = "distilbert-base-cased-distilled-squad"
# `docqa serve` refuses a shorter (or empty) DOCQA_API_TOKEN.
API_TOKEN_MIN_CHARS = 16
ENV_PREFIX = "DOCQA_"


# Settings whose value may carry a password can be read from a file instead (a Docker
# secret): DOCQA_<FIELD>_FILE names it, so the password is in neither argv (`ps`) nor the
# environment. Setting both DOCQA_<FIELD> and DOCQA_<FIELD>_FILE is an error; a flag or a
# keyword argument wins over both, and then the file is not read.
FILE_FIELDS = ("database_url", "broker_url")


def file_env_name(field: str) -> str:
    """The variable naming a file that holds Settings field `field`: DOCQA_<FIELD>_FILE."""
    return env_name(field) + "_FILE"


def read_setting_file(field: str, path: str) -> str:
    """The value of `field` from the file `path` (surrounding whitespace dropped); ValueError
    naming the file and its variable when it is missing, unreadable or empty."""
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except OSError as exc:
        raise ValueError(f"{file_env_name(field)}={path}: cannot read it ({exc.strerror or exc})") from None
    if not value:
        raise ValueError(f"{file_env_name(field)}={path}: the file is empty")
    return value


class _FromFiles(PydanticBaseSettingsSource):
    """FILE_FIELDS read from the files their DOCQA_<FIELD>_FILE variables name."""

    def __init__(self, settings_cls: type[BaseSettings], given: dict) -> None:
        super().__init__(settings_cls)
        self.given = given  # fields given as keyword arguments (CLI flags): they win, no file is read

    def get_field_value(self, field, field_name):  # required by the base class; __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, str]:
        environ = {k.upper(): v for k, v in os.environ.items()}
        values = {}
        for name in FILE_FIELDS:
            path = environ.get(file_env_name(name))
            if not path or name in self.given:
                continue
            if environ.get(env_name(name)):
                raise ValueError(
                    f"both {env_name(name)} and {file_env_name(name)} are set: set only one of them"
                )
            values[name] = read_setting_file(name, path)
        return values


class _StoreAndModel(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        given = getattr(init_settings, "init_kwargs", {})
        return init_settings, env_settings, _FromFiles(settings_cls, given), dotenv_settings, file_secret_settings

    database_url: str = Field(
        "sqlite:///docqa.db",
        description="result store: `sqlite:///FILE` (embedded) or `postgresql+psycopg://USER@HOST/DB` (production); "
        "`DOCQA_DATABASE_URL_FILE` may name a file holding the URL instead (a password then shows in neither "
        "`ps` nor the environment)",
    )
    broker_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Celery broker (distributed mode): `redis://`, or `rediss://...?ssl_cert_reqs=required` "
        "for TLS; `DOCQA_BROKER_URL_FILE` may name a file holding the URL instead",
    )
    queue: str = Field(
        "docqa", description="prefix of the broker queues: each model and revision gets its own, `<queue>.<model>-<hash>`"
    )
    model: str = Field(DEFAULT_MODEL, description="hub id or local folder of an AutoModelForQuestionAnswering")
    revision: str | None = Field(None, description="model revision (branch, tag or commit) on the hub")
    device: str = Field("auto", description="`auto` (CUDA if present, else CPU), `cpu`, `cuda`, `cuda:N`")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="`auto`: float32 on CPU (the reference's arithmetic), bfloat16 (or float16) on GPU. "
        "`bfloat16` on a CPU with AVX512-BF16/AMX is the fast CPU mode (about 3.5x the pipeline, "
        "docs/BENCHMARKS.md); it is refused on CPUs without those instructions, where it would be slower",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="`int8`: dynamic int8 linear layers, CPU only; the fast mode for CPUs without bfloat16 "
        "instructions (about 1.5-2x; answers may differ slightly)",
    )
    fast: bool = Field(
        False,
        description="answer in the fastest mode of this machine and say which on stderr: bfloat16 on CPUs with "
        "AMX, int8 on CPUs with AVX512-VNNI (no AMX) or AVX2 only, bfloat16 on a CUDA GPU (docs/BENCHMARKS.md, "
        "CPU fast mode); answers can differ slightly from float32's. A `dtype` or `quantize` set to anything "
        "but its default wins over it",
    )


# The answer parameters, with AnswerParams' own descriptions, defaults and bounds.
_WithAnswerParams = create_model(  # type: ignore[call-overload]  # fields built from AnswerParams
    "_WithAnswerParams",
    __base__=_StoreAndModel,
    **{name: (field.annotation, field) for name, field in AnswerParams.model_fields.items()},
)


# Settings.batch_windows when unset: what a message carries, and a worker's first claim on
# a CPU (then it claims what it measured it runs in about 3 s; docqa.worker.runner).
CPU_BATCH_WINDOWS = 32
GPU_BATCH_WINDOWS = 4096


class Settings(_WithAnswerParams):  # type: ignore[misc, valid-type]
    """All of docqa's settings; `answer_params()` gives the answer parameters as one value."""

    batch_tokens: int | None = Field(
        None,
        gt=0,
        description="token budget of one forward batch (windows x padded length); unset: 1536 on CPU "
        "(a few windows a batch are fastest there), 131072 on GPU",
    )
    max_document_chars: int = Field(5_000_000, gt=0, description="larger documents are refused, characters")
    max_question_chars: int = Field(1_000, gt=0, description="longer questions are refused, characters")
    worker_batch_jobs: int = Field(64, gt=0, le=4096,  # core.message.MAX_JOB_IDS
                                   description="jobs per broker message and per worker run, at most")
    batch_windows: int | None = Field(
        None,
        gt=0,
        description="windows one worker run claims, and one broker message carries, at most (a run takes "
        "at least one job or part): work is sized by windows so no message is a straggler; unset: a message "
        "carries 32, and a worker claims what it computes in about 3 s, timed on its engine at start and on "
        "its runs",
    )
    split_windows: int | None = Field(
        None,
        ge=0,
        description="a job with more windows than this runs as window-range parts that any worker can "
        "claim, merged into the same answers when the last part is done; unset: the worker's batch "
        "windows; 0: never split",
    )
    chunk_at_submit: bool = Field(
        True,
        description="producers tokenize each new document once and fix every new job's windows in the store, "
        "so workers only run the model; without the model's tokenizer on the producer, workers tokenize",
    )
    lease_seconds: int = Field(
        30,
        ge=3,
        description="a worker holds a job under a lease it renews every third of this while it computes; "
        "a job whose lease ran out (its worker died) is requeued by the sweeper, seconds",
    )
    reconcile_seconds: int = Field(
        60,
        ge=5,
        description="a queued job with no broker message for this long (a lost message, a killed "
        "producer, a failed send) is sent again by the fleet's reconciler, seconds",
    )
    max_attempts: int = Field(3, ge=1, description="runs of a job before it is marked failed")
    max_redeliveries: int = Field(
        10, ge=1, description="times a worker puts a message back (another store's, or the store or the model "
        "unavailable) before it dead-letters it with the reason; its jobs stay in the store and the reconciler "
        "sends the queued ones again")
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads per worker process; unset: usable cores / the docqa worker processes "
        "on the host (this worker's concurrency plus the other live workers registered from that host name)",
    )
    span_path: Literal["auto", "numpy", "device"] = Field(
        "auto",
        description="where spans are ranked: `numpy` reproduces the pipeline exactly (including its "
        "zero-score filler spans in tiny windows); `device` ranks on the GPU and copies back only "
        "candidates; `auto`: numpy on CPU, device on GPU",
    )
    pad_buckets: bool | Literal["auto"] = Field(
        "auto",
        description="pad each forward batch to one of a few shapes (widths to a multiple of 64 tokens, rows "
        "to a power of two), so CUDA graphs, `torch.compile` and cuBLAS see few shapes; answers are the "
        "same up to float rounding. `auto`: on for CUDA, off on CPU (where padding is only extra work)",
    )
    compile: Literal["off", "default", "reduce-overhead"] = Field(
        "off",
        description="`torch.compile` the model: `default`, or `reduce-overhead` (adds CUDA graphs on a GPU). "
        "Each new shape compiles on its first batch (tens of seconds; use with pad buckets); needs a C "
        "compiler; if compiling fails the model runs uncompiled, with a warning. `off`: not compiled",
    )
    trim_seconds: float = Field(
        10.0,
        ge=0,
        description="on a CPU, give freed activation memory back to the OS at most this often, seconds "
        "(glibc `malloc_trim`: about 20% lower peak memory, no measurable slowdown); 0 switches it off",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="`docqa worker` serves Prometheus metrics of all its pool processes on this port "
        "(`http://HOST:PORT/metrics`, on `DOCQA_METRICS_HOST`); unset: no metrics",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="address the worker's metrics port binds: loopback by default; `0.0.0.0` (all interfaces) "
        "for a Prometheus on another host or container (docker-compose.yml sets it)",
    )

    @property
    def sweep_seconds(self) -> float:
        """How often a worker beats its row, renews leases and sweeps: a third of a lease
        (so two beats may fail before a lease runs out), at least 1 s."""
        return max(1.0, self.lease_seconds / 3)

    @property
    def live_worker_seconds(self) -> float:
        """A worker seen within this many seconds (three sweeps) counts as live."""
        return 3 * self.sweep_seconds

    @property
    def model_queue(self) -> str:
        """The broker queue of this model and revision (workers consume it; producers send to it)."""
        return queue_for(self.queue, self.model, self.revision)

    api_token: SecretStr | None = Field(
        None,
        description=f"bearer token every HTTP API request must carry (`docqa serve`), at least "
        f"{API_TOKEN_MIN_CHARS} characters (an empty or shorter one is refused at start); unset: the server "
        "binds to loopback only and answers only requests addressed to localhost, 127.0.0.1 or [::1]",
    )
    api_max_body_bytes: int = Field(10_000_000, gt=0, description="HTTP API: larger request bodies are refused (413), bytes")
    api_max_documents: int = Field(1_000, gt=0, description="HTTP API: more documents in one request are refused (413)")
    api_models: str | None = Field(
        None,
        description="HTTP API: the models a submission may name in `model`, comma-separated, each spelled as "
        "`DOCQA_MODEL` spells it; others are refused (422). Unset: only the server's `DOCQA_MODEL`",
    )
    api_max_wait_seconds: float = Field(
        600.0, gt=0, description="HTTP API: the longest `?wait=` a request may ask for (longer: 422), seconds"
    )
    api_max_waiters: int = Field(
        100,
        gt=0,
        description="HTTP API: `?wait=` requests waiting at once, at most; one more is refused with 503 before "
        "anything is stored (retry, or poll `GET /v1/submissions/ID`). A waiting request holds no thread",
    )
    api_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="HTTP API: a connection must send a request's headers within this many seconds of opening "
        "(or of its previous response), and a request body must keep arriving, or it is closed, seconds",
    )
    api_warm_up: bool = Field(
        True,
        description="HTTP API: load what the first submission needs when the server starts, in the background: "
        "the model (a SQLite store: the server answers itself) or the producer's tokenizer (workers answer), so "
        "that submission does not wait for it; false: load it on first use (a server that mostly serves reads "
        "starts with no model in memory)",
    )

    def api_token_problem(self) -> str | None:
        """Why DOCQA_API_TOKEN cannot be used (empty, or under API_TOKEN_MIN_CHARS characters); None
        when it can, or when none is set."""
        if self.api_token is None:
            return None
        length = len(self.api_token.get_secret_value().strip())
        if length >= API_TOKEN_MIN_CHARS:
            return None
        what = "empty" if length == 0 else f"{length} characters long"
        return (f"DOCQA_API_TOKEN is {what}: use a token of at least {API_TOKEN_MIN_CHARS} characters (for example "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'), or unset it to serve 127.0.0.1 "
                "only, without authentication")

    def answer_params(self) -> AnswerParams:
        """The answer parameters as one validated value (ValidationError if they conflict)."""
        return AnswerParams(**{name: getattr(self, name) for name in AnswerParams.model_fields})


def env_name(field: str) -> str:
    """The environment variable of a Settings field: DOCQA_<FIELD>."""
    return ENV_PREFIX + field.upper()


def settings_table() -> str:
    """The README's configuration table (markdown), one row per Settings field."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "–" if field.default is None else f"`{str(field.default).lower() if isinstance(field.default, bool) else field.default}`"
        rows.append(f"| `{env_name(name)}` | {default} | {field.description} |")
    return "\n".join(rows)


# The README keeps the table between these lines.
TABLE_START = "<!-- settings table: python -m docqa.core.settings README.md -->"
TABLE_END = "<!-- end of settings table -->"


def update_readme(path: str) -> None:
    """Rewrite the table between TABLE_START and TABLE_END in `path`."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    if not rest:
        raise SystemExit(f"{path} has no line {TABLE_START!r}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"{head}{TABLE_START}\n{settings_table()}\n{TABLE_END}{tail}")


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1:
        update_readme(sys.argv[1])
    else:
        print(settings_table())
