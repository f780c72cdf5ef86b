"""Reading documents: files, directories, JSONL, stdin, lazily and with clear errors.

Text is decoded as strict UTF-8 and kept exactly as given (no newline or Unicode
normalisation): answer offsets index this text.
"""

from __future__ import annotations

from docqa.core.errors import UsageError

import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterator

from docqa.core.text import clip


class InputError(UsageError):
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
    # The file this text was read from (absolute), for versions: the same path with new
    # content is a new version of that document. None for stdin and JSONL lines.
    path: str | None = None

    @property
    def version_key(self) -> str | None:
        """What names this document across submissions: its id, else its file's path."""
        if self.external_id is not None:
            return f"id:{self.external_id}"
        if self.path is not None:
            return f"path:{self.path}"
        return None


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
            f"(--max-question-chars / DOCQA_MAX_QUESTION_CHARS): {clip(question, 60)!r}"
        )


def read_file(path: Path, max_chars: int | None = None) -> SourceDocument:
    source = str(path)
    try:
        data = path.read_bytes()
        return SourceDocument(source=source, text=decode_text(data, source, max_chars), path=str(path.resolve()))
    except InputError as exc:
        return SourceDocument(source=source, error=str(exc))
    except OSError as exc:
        return SourceDocument(source=source, error=f"{source}: cannot be read ({exc.strerror})")


def read_jsonl(path: Path | None, max_chars: int | None = None, stream=None) -> Iterator[SourceDocument]:
    """One document per line: {"id", "text", "questions"?, "metadata"?}. Bad lines become errors."""
    name = "stdin" if path is None else str(path)
    if stream is not None:
        handle = stream
    elif path is not None:
        handle = open(path, "rb")
    else:
        raise TypeError("read_jsonl reads a path or a stream")
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
    return document_from_mapping(obj, source, max_chars)


# Characters of a document id at most: ids are keys the store indexes (PostgreSQL refuses an
# index entry over about 2,700 bytes).
MAX_ID_CHARS = 512


def document_from_mapping(obj: Mapping, source: str, max_chars: int | None) -> SourceDocument:
    """The document of `{"id"?, "text", "questions"?, "metadata"?}` (a JSONL line, a Client
    mapping, an HTTP object), or InputError naming what is wrong, with everything checked
    that the store would refuse later (NUL characters, lone surrogates, numbers JSON cannot
    write, an overlong id), so a bad item never stops a submission half-way."""
    text, questions, metadata, ext = obj.get("text"), obj.get("questions") or [], obj.get("metadata"), obj.get("id")
    if not isinstance(text, str):
        raise InputError(f'{source}: has no "text" string')
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        raise InputError(f'{source}: "questions" must be a list of strings')
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InputError(f'{source}: "metadata" must be an object')
    if ext is not None and len(str(ext)) > MAX_ID_CHARS:
        raise InputError(f"{source}: its id has {len(str(ext)):,} characters, over the limit of {MAX_ID_CHARS}")
    check_text(text, source, max_chars)
    for value, what in ((None if ext is None else str(ext), "its id"), (text, "its text"),
                        (questions, "a question"), (metadata, "its metadata")):
        problem = unstorable(value, what)
        if problem is not None:
            raise InputError(f"{source}: {problem}")
    return SourceDocument(source=source, text=text, external_id=None if ext is None else str(ext),
                          questions=list(questions), metadata=dict(metadata) if metadata is not None else None)


def unstorable(value: Any, what: str) -> str | None:
    """Why `value` (a str or float, or those in a list or mapping, keys included) cannot be
    stored unchanged: a NUL character, a lone surrogate or a number JSON cannot write,
    `what` naming it; None if it can."""
    from docqa.storage.identity import check_storable, text_sha256

    if isinstance(value, float) and not math.isfinite(value):
        return f"{what}: {value!r} is not a finite number (JSON has no Infinity or NaN)"
    if isinstance(value, str):
        try:
            check_storable(value, what)
            text_sha256(value)
        except ValueError as exc:
            return str(exc) if str(exc).startswith(what) else f"{what}: {exc}"
        return None
    items = [*value.keys(), *value.values()] if isinstance(value, Mapping) else value
    if isinstance(items, (list, tuple)):
        return next((p for p in (unstorable(v, what) for v in items) if p is not None), None)
    return None


@dataclass
class Walk:
    """Which files a walked directory gives, and what it skipped as hidden.

    Below a directory given as input, hidden files and folders (a name starting with '.':
    .git, .env, .DS_Store) are skipped and counted here. `include` globs: only the files
    they match are read (a folder they match is read whole); `exclude` globs: the files
    and folders they match are skipped, whatever `include` says. A glob is matched against
    the path relative to the walked directory (`notes/*.txt`) and, when it holds no '/',
    against each file or folder name at any depth (`*.md`, `drafts`). A hidden name is
    matched only by a glob that spells its leading dot, as in a shell (`.env`, `.*`,
    `.github/*.yml`): `*` alone never reads a hidden file.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: int = 0  # hidden files and folders skipped so far
    hidden_paths: list[str] = field(default_factory=list)  # the first few of them

    EXAMPLES = 5  # hidden paths kept to name in a message

    def __post_init__(self) -> None:
        self.include = tuple(_clean_glob(g) for g in self.include)
        self.exclude = tuple(_clean_glob(g) for g in self.exclude)

    def files(self, root: Path) -> Iterator[Path | SourceDocument]:
        """The files to read below `root`, in path order, lazily (one folder listed at a time);
        a SourceDocument with the error for a folder that cannot be listed."""
        yield from self._visit(root, "", False)

    def _visit(self, folder: Path, rel: str, included: bool) -> Iterator[Path | SourceDocument]:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            yield SourceDocument(source=str(folder), error=f"{folder}: cannot be read ({exc.strerror})")
            return
        for entry in entries:
            name, path = entry.name, folder / entry.name
            entry_rel = f"{rel}/{name}" if rel else name
            if any(_glob_matches(g, entry_rel, name) for g in self.exclude):
                continue
            named = any(_glob_matches(g, entry_rel, name) for g in self.include)
            if entry.is_dir() and not entry.is_symlink():  # symlinked folders are not followed (loops)
                if name.startswith(".") and not named and not any(_may_hold(g, entry_rel) for g in self.include):
                    self._skip_hidden(path)
                    continue
                yield from self._visit(path, entry_rel, included or named)
            elif entry.is_file():
                if name.startswith(".") and not named:
                    self._skip_hidden(path)
                elif not self.include or included or named:
                    yield path

    def _skip_hidden(self, path: Path) -> None:
        self.hidden += 1
        if len(self.hidden_paths) < self.EXAMPLES:
            self.hidden_paths.append(str(path))


def _clean_glob(glob: str) -> str:
    glob = glob.strip().rstrip("/")
    while glob.startswith("./"):
        glob = glob[2:]
    return glob


def _glob_matches(glob: str, rel: str, name: str) -> bool:
    """Whether `glob` names the file or folder at `rel` (relative path, '/'-separated)."""
    if not fnmatchcase(rel if "/" in glob else name, glob):
        return False
    return not name.startswith(".") or glob.rsplit("/", 1)[-1].startswith(".")


def _may_hold(glob: str, rel_folder: str) -> bool:
    """Whether a path glob can match something below the folder at `rel_folder`."""
    if "/" not in glob:
        return False
    if "**" in glob:
        return True
    glob_parts, parts = glob.split("/"), rel_folder.split("/")
    return len(glob_parts) > len(parts) and all(
        fnmatchcase(p, g) and (not p.startswith(".") or g.startswith(".")) for p, g in zip(parts, glob_parts)
    )


def iter_inputs(inputs: list[str], max_chars: int | None = None, walk: Walk | None = None) -> Iterator[SourceDocument]:
    """Documents from files, directories (recursive, in path order), *.jsonl files and '-' (stdin).

    Directories are walked as `walk` says (default: every file but the hidden ones, which
    are counted in `walk.hidden`). Lazy: one document in memory at a time (per JSONL
    line), one folder's listing at a time.
    """
    walk = Walk() if walk is None else walk
    for name in inputs:
        if name == "-":
            yield from _read_stdin(max_chars)
            continue
        path = Path(name)
        if path.is_dir():
            hidden_before, found = walk.hidden, False
            for item in walk.files(path):
                found = True
                if isinstance(item, SourceDocument):
                    yield item
                else:
                    yield from _read_path(item, max_chars)
            if not found:
                why = [f"hidden ones skipped: {walk.hidden - hidden_before}"] if walk.hidden > hidden_before else []
                why += ["none that --include/--exclude let through"] if walk.include or walk.exclude else []
                why_text = f" ({'; '.join(why)})" if why else ""
                yield SourceDocument(source=name, error=f"{name}: directory holds no files to read{why_text}")
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
