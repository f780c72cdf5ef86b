"""Walking a directory: hidden files and folders skipped and counted, --include/--exclude
globs, path order, and a listing that stays lazy."""

from __future__ import annotations

from pathlib import Path

from docqa.producer.documents import Walk, iter_inputs


def _tree(root: Path) -> Path:
    files = {
        "b.txt": "bee", "a.txt": "ay", "a/z.txt": "zed", "notes/n.md": "note", "notes/drafts/d.md": "draft",
        ".env": "SECRET=1", ".git/HEAD": "ref: refs/heads/main", ".git/objects/ab": "blob",
        ".github/ci.yml": "on: push", "sub/.cache/x.txt": "cached", "sub/.hid.md": "hidden md", "sub/s.txt": "ess",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def _read(root: Path, walk: Walk | None = None) -> list[str]:
    return [Path(d.source).relative_to(root).as_posix() for d in iter_inputs([str(root)], walk=walk) if not d.error]


def test_hidden_files_and_folders_are_skipped_and_counted(tmp_path):
    root = _tree(tmp_path / "docs")
    walk = Walk()
    assert _read(root, walk) == ["a/z.txt", "a.txt", "b.txt", "notes/drafts/d.md", "notes/n.md", "sub/s.txt"]
    # .env, .git, .github, sub/.cache, sub/.hid.md: a hidden folder counts once, unopened
    assert walk.hidden == 5
    assert walk.hidden_paths == [str(root / p) for p in (".env", ".git", ".github", "sub/.cache", "sub/.hid.md")]


def test_path_order_is_the_order_of_sorted_paths(tmp_path):
    root = _tree(tmp_path / "docs")
    visible = sorted(p for p in root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts))
    assert _read(root) == [p.relative_to(root).as_posix() for p in visible]


def test_include_reads_only_what_it_matches(tmp_path):
    root = _tree(tmp_path / "docs")
    assert _read(root, Walk(include=("*.md",))) == ["notes/drafts/d.md", "notes/n.md"]  # not sub/.hid.md
    assert _read(root, Walk(include=("notes",))) == ["notes/drafts/d.md", "notes/n.md"]  # a folder: all of it
    assert _read(root, Walk(include=("a/*.txt",))) == ["a/z.txt"]  # a path, relative to the directory
    assert _read(root, Walk(include=(".env",))) == [".env"]
    assert _read(root, Walk(include=(".github/*.yml",))) == [".github/ci.yml"]
    assert _read(root, Walk(include=("*.md", ".*.md"))) == ["notes/drafts/d.md", "notes/n.md", "sub/.hid.md"]
    everything = Walk(include=("*", ".*"))
    assert len(_read(root, everything)) == 12 and everything.hidden == 0


def test_exclude_skips_files_and_folders_and_wins_over_include(tmp_path):
    root = _tree(tmp_path / "docs")
    assert _read(root, Walk(exclude=("drafts", "*.txt"))) == ["notes/n.md"]
    assert _read(root, Walk(exclude=("notes/drafts/",))) == ["a/z.txt", "a.txt", "b.txt", "notes/n.md", "sub/s.txt"]
    assert _read(root, Walk(include=("*.md",), exclude=("n.md",))) == ["notes/drafts/d.md"]


def test_a_directory_with_nothing_to_read_says_why(tmp_path):
    root = tmp_path / "only-hidden"
    (root / ".git").mkdir(parents=True)
    (root / ".env").write_text("A=1")
    [doc] = iter_inputs([str(root)])
    assert doc.error == f"{root}: directory holds no files to read (hidden ones skipped: 2)"
    [doc] = iter_inputs([str(_tree(tmp_path / "docs"))], walk=Walk(include=("*.pdf",)))
    assert "directory holds no files to read" in doc.error and "--include/--exclude" in doc.error


def test_a_hidden_file_named_as_an_input_is_read(tmp_path):
    (tmp_path / ".notes.txt").write_text("given by name", encoding="utf-8")
    [doc] = iter_inputs([str(tmp_path / ".notes.txt")])
    assert doc.error is None and doc.text == "given by name"


def test_the_walk_lists_one_folder_at_a_time(tmp_path):
    # A folder is listed when the walk reaches it, not before: a file added to a later
    # folder after the first document was read is still found.
    root = tmp_path / "docs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.txt").write_text("one")
    (root / "b").mkdir()
    docs = iter_inputs([str(root)])
    assert Path(next(docs).source).name == "1.txt"
    (root / "b" / "2.txt").write_text("two")
    assert [Path(d.source).name for d in docs] == ["2.txt"]
