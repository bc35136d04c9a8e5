"""The ``condavault upload`` fast parser (``cli.uploading.parse``): the forms it runs itself, and the
ones it leaves to typer (which then reports help or the error)."""

from __future__ import annotations

from pathlib import Path

from condavault.cli.uploading import BATCH_FILES, PARALLEL, chunks, package_files, parse


def test_the_common_forms_are_parsed() -> None:
    glob, opts = parse(["upload", "ch", "a.conda", "b.conda"]) or ({}, None)
    assert glob == {} and opts is not None
    assert (opts.channel, opts.files, opts.parallel, opts.batch_files) == (
        "ch",
        ["a.conda", "b.conda"],
        PARALLEL,
        BATCH_FILES,
    )
    assert (opts.force, opts.skip_existing, opts.wait) == (False, False, True)
    parsed = parse(
        [
            "--url",
            "http://x:1",
            "--token=t",
            "upload",
            "ch",
            "dir",
            "--skip-existing",
            "--no-wait",
            "--force",
            "--batch-files",
            "7",
            "--parallel=2",
            "--",
            "--odd-name.conda",
        ]
    )
    assert parsed is not None
    glob, opts = parsed
    assert glob == {"url": "http://x:1", "token": "t"}
    assert opts.files == ["dir", "--odd-name.conda"] and opts.batch_files == 7 and opts.parallel == 2
    assert opts.force and opts.skip_existing and not opts.wait


def test_anything_else_goes_to_typer() -> None:
    for argv in (
        [],
        ["upload"],
        ["upload", "ch"],  # no files: typer says which argument is missing
        ["upload", "--help"],
        ["upload", "ch", "f.conda", "--parallel", "0"],  # out of range: typer says so
        ["upload", "ch", "f.conda", "--batch-files", "x"],
        ["upload", "ch", "f.conda", "--unknown"],
        ["--verbose", "upload", "ch", "f.conda"],
        ["serve", "--port", "1"],
        ["--data-dir", "d", "serve"],
    ):
        assert parse(argv) is None, argv


def test_files_folders_and_requests(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    a = tmp_path / "a-1-0.conda"
    b = tmp_path / "sub" / "b-1-0.tar.bz2"
    for p in (a, b, tmp_path / "sub" / "notes.txt"):
        p.write_bytes(b"x" * 10)
    assert package_files([tmp_path, a]) == [a, b]  # each once, folders searched for packages only
    sized = [(a, 10), (b, 10), (a, 30)]
    assert chunks(sized, 2, 1000) == [[(a, 10), (b, 10)], [(a, 30)]]
    assert chunks(sized, 10, 25) == [[(a, 10), (b, 10)], [(a, 30)]]  # a file over the size goes alone
