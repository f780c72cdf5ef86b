"""Reading documents: files, directories, JSONL, stdin, lazily and with clear errors.

Text is decoded as strict UTF-8 and kept exactly as given (no newline or Unicode
normalisation): answer offsets index this text.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


class InputError(ValueError):
    """One input cannot be used; the message names it and says why."""


@dataclass
class SourceDocument:
    """A document as read: text plus where it came from.

    `error` is set (and text empty) when this input could not be read; the producer
    reports it and carries on with the others.
    """

    source: str
    text: str = ""
    external_id: str | None = None
    questions: list[str] = field(default_factory=list)
    metadata: dict | None = None
    error: str | None = None


def decode_text(data: bytes, source: str, max_chars: int | None = None) -> str:
    """Strict UTF-8 text of a file's bytes, or InputError saying what is wrong."""
    if b"\x00" in data[:8192]:
        raise InputError(f"{source}: looks like a binary file (it contains NUL bytes); docqa reads UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{source}: is not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
            "convert it to UTF-8 first"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark is an encoding artefact, not content
    check_text(text, source, max_chars)
    return text


def check_text(text: str, source: str, max_chars: int | None) -> None:
    if not text.strip():
        raise InputError(f"{source}: is empty (no text to answer from)")
    if max_chars is not None and len(text) > max_chars:
        raise InputError(
            f"{source}: has {len(text):,} characters, over the limit of {max_chars:,} "
            "(raise it with --max-document-chars / DOCQA_MAX_DOCUMENT_CHARS)"
        )


def check_question(question: str, max_chars: int | None, source: str | None = None) -> None:
    """InputError naming the limit when `question` is longer than `max_chars` characters."""
    if max_chars is not None and len(question) > max_chars:
        where = f"{source}: " if source else ""
        raise InputError(
            f"{where}a question of {len(question):,} characters is over the limit of {max_chars:,} "
            f"(--max-question-chars / DOCQA_MAX_QUESTION_CHARS): {question[:60]!r}..."
        )


def read_file(path: Path, max_chars: int | None = None) -> SourceDocument:
    source = str(path)
    try:
        data = path.read_bytes()
        return SourceDocument(source=source, text=decode_text(data, source, max_chars))
    except InputError as exc:
        return SourceDocument(source=source, error=str(exc))
    except OSError as exc:
        return SourceDocument(source=source, error=f"{source}: cannot be read ({exc.strerror})")


def read_jsonl(path: Path | None, max_chars: int | None = None, stream=None) -> Iterator[SourceDocument]:
    """One document per line: {"id", "text", "questions"?, "metadata"?}. Bad lines become errors."""
    name = "stdin" if path is None else str(path)
    handle = stream if stream is not None else open(path, "rb")
    try:
        for n, raw in enumerate(handle, start=1):
            source = f"{name}:{n}"
            line = raw.decode("utf-8", errors="strict") if isinstance(raw, bytes) else raw
            if not line.strip():
                continue
            try:
                yield _jsonl_document(line, source, max_chars)
            except InputError as exc:
                yield SourceDocument(source=source, error=str(exc))
    except UnicodeDecodeError:
        yield SourceDocument(source=name, error=f"{name}: is not valid UTF-8")
    finally:
        if stream is None:
            handle.close()


def _jsonl_document(line: str, source: str, max_chars: int | None) -> SourceDocument:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: malformed JSON line ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise InputError(f'{source}: a JSONL line must be an object like {{"id": ..., "text": ...}}')
    text = obj.get("text")
    if not isinstance(text, str):
        raise InputError(f'{source}: has no "text" string')
    questions = obj.get("questions") or []
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        raise InputError(f'{source}: "questions" must be a list of strings')
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InputError(f'{source}: "metadata" must be an object')
    check_text(text, source, max_chars)
    ext = obj.get("id")
    return SourceDocument(
        source=source,
        text=text,
        external_id=None if ext is None else str(ext),
        questions=list(questions),
        metadata=metadata,
    )


def iter_inputs(inputs: list[str], max_chars: int | None = None) -> Iterator[SourceDocument]:
    """Documents from files, directories (recursive, sorted), *.jsonl files and '-' (stdin).

    Lazy: one document in memory at a time (per JSONL line).
    """
    for name in inputs:
        if name == "-":
            yield from _read_stdin(max_chars)
            continue
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not files:
                yield SourceDocument(source=name, error=f"{name}: directory holds no files")
            for p in files:
                yield from _read_path(p, max_chars)
        elif path.exists():
            yield from _read_path(path, max_chars)
        else:
            yield SourceDocument(source=name, error=f"{name}: no such file or directory")


def _read_path(path: Path, max_chars: int | None) -> Iterator[SourceDocument]:
    if path.suffix == ".jsonl":
        yield from read_jsonl(path, max_chars)
    else:
        yield read_file(path, max_chars)


def _read_stdin(max_chars: int | None) -> Iterator[SourceDocument]:
    data = sys.stdin.buffer.read()
    try:
        yield SourceDocument(source="stdin", text=decode_text(data, "stdin", max_chars))
    except InputError as exc:
        yield SourceDocument(source="stdin", error=str(exc))


def read_questions(path: str) -> list[str]:
    """Questions from a file, one per line; blank lines and lines starting with # skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the questions file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: the questions file is not valid UTF-8") from None
    questions = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not questions:
        raise InputError(f"{path}: the questions file holds no questions")
    return questions
