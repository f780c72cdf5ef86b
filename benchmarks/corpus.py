"""Benchmark workload: real English prose from the Python documentation, with questions.

Source: Debian's `python3.11-doc` package, which installs the reStructuredText sources
of the Python 3.11 documentation under /usr/share/doc/python3.11/html/_sources
(`apt-get install python3.11-doc`). Nothing here is needed by the tests or by CI.

Each `.rst.txt` file is turned into plain prose: markup roles keep their text
(":func:`open`" -> "open"), directives, labels, heading underlines, tables and code
(literal blocks, doctests, code-block bodies) are dropped, and the lines of a paragraph
are joined. Files whose prose is 5,000-30,000 characters long are candidates; they are
ordered by the sha256 of their relative path (a fixed shuffle, so the first N documents
mix tutorial, library, reference and HOWTO pages) and the first N are taken.

Questions come from the document itself: its title and section headings, put into a few
question templates, so they are real-looking, of varied length, and the same on every
machine. The selection depends only on the files, so two runs (and two machines with
the same package version) get the same workload.

    python benchmarks/corpus.py --docs 8 --questions 3      # print the selection
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

DOC_ROOT = Path("/usr/share/doc/python3.11/html/_sources")
# Extra prose for tokenizer training only (package debian-reference-en), when installed.
DEBIAN_REFERENCE = Path("/usr/share/debian-reference/debian-reference.en.txt.gz")
MIN_CHARS = 5_000
MAX_CHARS = 30_000

# Directive bodies that are code or machine text, never prose.
_CODE_DIRECTIVES = {
    "code-block", "sourcecode", "code", "doctest", "testcode", "testsetup", "testcleanup",
    "testoutput", "literalinclude", "productionlist", "parsed-literal", "highlight", "toctree",
    "include", "tabularcolumns", "list-table", "csv-table", "table", "raw", "only", "index",
    "image", "figure", "math", "graphviz", "audit-event", "availability",
}
_HEADING_CHARS = set("=-~*^+#'\"`:.")
_ROLE = re.compile(r":[a-zA-Z][\w:+-]*:`([^`]*)`")
_LINK = re.compile(r"`([^`<]*?)\s*<[^>]*>`__?")
_PLAIN_LINK = re.compile(r"`([^`]+)`__?")
_LITERAL = re.compile(r"``([^`]+)``")
_FOOTNOTE = re.compile(r"\s*\[#?[\w-]*\]_")
_SUBST = re.compile(r"\|([\w -]+)\|")
_STARS = re.compile(r"\*\*?([^*\s][^*]*?)\*\*?")


@dataclass(frozen=True)
class BenchDocument:
    """One benchmark document: its prose and the questions asked about it."""

    name: str  # path relative to DOC_ROOT, e.g. "library/json.rst.txt"
    title: str
    text: str
    questions: tuple[str, ...] = field(default_factory=tuple)


def _role_text(match: re.Match) -> str:
    inner = match.group(1).strip()
    inner = re.sub(r"\s*<[^>]*>$", "", inner) if "<" in inner and inner.endswith(">") else inner
    inner = inner.lstrip("!")
    if inner.startswith("~"):
        inner = inner[1:].rsplit(".", 1)[-1]
    return inner


def inline_text(line: str) -> str:
    """One line of reST with its inline markup reduced to the words a reader sees."""
    line = _ROLE.sub(_role_text, line)
    line = _LINK.sub(lambda m: m.group(1), line)
    line = _PLAIN_LINK.sub(lambda m: m.group(1), line)
    line = _LITERAL.sub(lambda m: m.group(1), line)
    line = _FOOTNOTE.sub("", line)
    line = _SUBST.sub(lambda m: m.group(1), line)
    line = _STARS.sub(lambda m: m.group(1), line)
    return line.replace("\\ ", "").replace("\\", "")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_underline(line: str) -> bool:
    s = line.strip()
    return len(s) >= 3 and len(set(s)) == 1 and s[0] in _HEADING_CHARS


def rst_to_prose(source: str) -> tuple[str, str, list[str]]:
    """(title, prose, section headings) of one reST document.

    Prose paragraphs are separated by one blank line; the lines of a paragraph are
    joined with single spaces. Headings are kept as their own paragraphs (they are
    part of what a reader sees) and also returned in document order.
    """
    lines = source.expandtabs(8).splitlines()
    paragraphs: list[str] = []
    headings: list[str] = []
    current: list[str] = []
    skip_deeper_than: int | None = None  # drop lines indented more than this (a code body)
    literal_next = False  # the previous paragraph ended with "::": an indented block follows

    def flush() -> None:
        nonlocal literal_next
        if current:
            para = inline_text(" ".join(current)).strip()
            if para.endswith("::"):
                literal_next = True
                para = para[:-2].rstrip()
                para = para + ":" if para and para[-1].isalnum() else para
            para = re.sub(r"\s+", " ", para)
            if para:
                paragraphs.append(para)
            current.clear()

    i = 0
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        i += 1
        if skip_deeper_than is not None:
            if not stripped or _indent(raw) > skip_deeper_than:
                continue
            skip_deeper_than = None
        if not stripped:
            flush()
            continue
        if literal_next and current == [] and _indent(raw) > 0:
            # The indented block after "::" is code: skip it and anything deeper.
            skip_deeper_than = _indent(raw) - 1
            continue
        literal_next = False
        # Heading: a line followed by an underline of the same length or more.
        if i < len(lines) and _is_underline(lines[i]) and not _is_underline(raw) and current == []:
            title = inline_text(stripped).strip()
            i += 1
            if title:
                headings.append(title)
                paragraphs.append(title)
            continue
        if _is_underline(raw) or stripped.startswith(("+--", "+==", "|")) or re.fullmatch(r"[=\s]+", stripped):
            flush()
            continue
        if stripped.startswith(".. "):
            flush()
            m = re.match(r"\.\.\s+([\w-]+)::", stripped)
            name = m.group(1) if m else None
            if name is None or name in _CODE_DIRECTIVES:
                # A comment, label, footnote, substitution or code directive: drop its body.
                skip_deeper_than = _indent(raw)
            else:
                # A signature may continue over lines ending in a backslash.
                while stripped.endswith("\\") and i < len(lines):
                    stripped = lines[i].strip()
                    i += 1
            continue  # keep the body of prose directives (note, function, ...): it follows
        if stripped.startswith((">>>", "... ", "$ ", "% ")) or stripped == "...":
            continue
        if re.match(r":[\w-]+:(\s|$)", stripped):  # directive option such as ":synopsis:"
            continue
        current.append(stripped)
    flush()
    title = headings[0] if headings else ""
    return title, "\n\n".join(paragraphs) + "\n", headings


_QUESTION_TEMPLATES = (
    "What is {topic} used for?",
    "How does {topic} work?",
    "What does the documentation say about {topic}?",
    "When should you use {topic}?",
    "What happens with {topic}?",
    "Which function is described in {topic}?",
)


def _topic(heading: str) -> str:
    topic = re.sub(r"\s+---?\s+.*$", "", heading)  # "json --- JSON encoder" -> "json"
    topic = topic.strip(" .:")
    words = topic.split()
    return " ".join(words[:8])


def make_questions(title: str, headings: list[str], n: int) -> tuple[str, ...]:
    """`n` distinct questions built from the document's title and section headings."""
    topics = list(dict.fromkeys(t for t in (_topic(h) for h in [title, *headings]) if len(t) >= 3))
    if not topics:
        topics = ["this document"]
    questions: list[str] = []
    k = 0
    while len(questions) < n and k < 10 * n + 10:
        template = _QUESTION_TEMPLATES[k % len(_QUESTION_TEMPLATES)]
        q = template.format(topic=topics[k % len(topics)])
        if q not in questions:
            questions.append(q)
        k += 1
    return tuple(questions)


def _order_key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def available(root: Path = DOC_ROOT) -> bool:
    return root.is_dir()


def all_prose(root: Path = DOC_ROOT) -> list[tuple[str, str, str, list[str]]]:
    """(name, title, prose, headings) of every document, in path order."""
    if not available(root):
        raise SystemExit(
            f"{root} is missing: install the Python documentation sources with "
            "`apt-get update && apt-get install -y python3.11-doc debian-reference-en`"
        )
    out = []
    for path in sorted(root.rglob("*.rst.txt")):
        name = path.relative_to(root).as_posix()
        title, prose, headings = rst_to_prose(path.read_text(encoding="utf-8", errors="replace"))
        out.append((name, title, prose, headings))
    return out


def select_documents(n_docs: int, n_questions: int, root: Path = DOC_ROOT,
                     min_chars: int = MIN_CHARS) -> list[BenchDocument]:
    """The first `n_docs` documents of `min_chars` (default 5,000) to 30,000 characters in the
    fixed shuffle."""
    candidates = []
    for name, title, prose, headings in all_prose(root):
        if not (max(min_chars, MIN_CHARS) <= len(prose) <= MAX_CHARS):
            continue
        words = prose.split()
        alpha = sum(w.isalpha() for w in words) / max(1, len(words))
        if alpha < 0.6:  # mostly tables or symbols: not prose
            continue
        candidates.append((name, title, prose, headings))
    candidates.sort(key=lambda c: _order_key(c[0]))
    if n_docs > len(candidates):
        raise SystemExit(f"asked for {n_docs} documents, only {len(candidates)} qualify")
    return [
        BenchDocument(name=name, title=title, text=prose, questions=make_questions(title, headings, n_questions))
        for name, title, prose, headings in candidates[:n_docs]
    ]


def training_text(root: Path = DOC_ROOT, *, with_code: bool = True) -> list[str]:
    """Text for training the benchmark tokenizer, one paragraph or line per entry.

    Every paragraph of the prose of every document; with `with_code`, also the raw
    sources (code examples and identifiers are text a tokenizer meets in these
    documents too); and the Debian Reference's plain text when it is installed.
    """
    lines: list[str] = []
    for _name, _title, prose, _headings in all_prose(root):
        lines.extend(p for p in prose.split("\n\n") if p.strip())
    if with_code:
        for path in sorted(root.rglob("*.rst.txt")):
            lines.extend(ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip())
    if DEBIAN_REFERENCE.exists():
        import gzip

        with gzip.open(DEBIAN_REFERENCE, "rt", encoding="utf-8", errors="replace") as fh:
            lines.extend(ln for ln in fh.read().splitlines() if ln.strip())
    return lines


def workload_digest(docs: list[BenchDocument]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.name.encode())
        h.update(d.text.encode())
        for q in d.questions:
            h.update(q.encode())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=8)
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--show", metavar="NAME", help="print one document's prose")
    ap.add_argument("--jsonl", action="store_true", help="print the workload as docqa JSONL")
    args = ap.parse_args(argv)
    if args.show:
        title, prose, headings = rst_to_prose((DOC_ROOT / args.show).read_text(encoding="utf-8"))
        print(prose)
        return 0
    docs = select_documents(args.docs, args.questions)
    for d in docs:
        if args.jsonl:
            print(json.dumps({"id": d.name, "text": d.text, "questions": list(d.questions)}))
        else:
            print(f"{d.name}: {len(d.text)} chars; {list(d.questions)}")
    if not args.jsonl:
        print(f"workload {workload_digest(docs)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
