"""The output-folder policy, replaying the reported losses: ``--out sandbox --overwrite``, ``--out .``,
the home folder, the data folder, and an ``--overwrite`` run that fails or is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import compress.outputs as outputs
from compress.errors import OutputDirError
from compress.outputs import (
    STUDENT_MARKER,
    StagedOutput,
    check_output_path,
    checkpoints_dir,
    remove_checkpoints,
    remove_stale_siblings,
)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """The reporter's folder: the teacher, the corpus and an unrelated file."""
    root = tmp_path / "sandbox"
    (root / "teacher").mkdir(parents=True)
    (root / "teacher" / "config.json").write_text('{"model_type": "bert"}')
    (root / "teacher" / "model.safetensors").write_bytes(b"\x00weights" * 100)
    (root / "corpus.txt").write_text("one line of text\n" * 50)
    (root / "notes.txt").write_text("unrelated, precious\n")
    return root


def make_student(folder: Path, weights: bytes = b"old weights", extra: str | None = "old-only.txt") -> Path:
    """A folder as the exporter writes it: compression.json marks it as a student of this library."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STUDENT_MARKER).write_text('{"teacher": "x"}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "tokenizer").mkdir(exist_ok=True)
    (folder / "tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    if extra:
        (folder / extra).write_text("only in this version")
    return folder


def hidden_siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


# -- refused output paths ------------------------------------------------------------------------


def test_out_holding_the_teacher_and_data_is_refused_and_nothing_is_deleted(sandbox: Path) -> None:
    before = snapshot(sandbox)
    with pytest.raises(OutputDirError, match=r"contains the run's input .*teacher.*e\.g\. .*sandbox/student") as err:
        check_output_path(sandbox, protected=[sandbox / "teacher", sandbox / "corpus.txt"], overwrite=True)
    assert "\n" not in str(err.value)
    assert snapshot(sandbox) == before


def test_out_containing_only_the_data_file_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "corpus.txt").write_text("text\n")
    with pytest.raises(OutputDirError, match="contains the run's input"):
        check_output_path(data, protected=[data / "corpus.txt"], overwrite=True)
    with pytest.raises(OutputDirError, match=r"is the run's input .*corpus\.txt-student"):
        check_output_path(data / "corpus.txt", protected=[data / "corpus.txt"], overwrite=True)


def test_out_that_is_the_teacher_suggests_a_sibling(sandbox: Path) -> None:
    with pytest.raises(OutputDirError, match=r"is the run's input .*e\.g\. .*teacher-student"):
        check_output_path(sandbox / "teacher", protected=[sandbox / "teacher"], overwrite=True)


def test_working_directory_and_its_ancestors_are_refused(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(sandbox)
    before = snapshot(sandbox)
    with pytest.raises(OutputDirError, match=r"is the working directory .*e\.g\. .*sandbox/student"):
        check_output_path(".", protected=[], overwrite=True)
    monkeypatch.chdir(sandbox / "teacher")
    with pytest.raises(OutputDirError, match="contains the working directory"):
        check_output_path("..", protected=[], overwrite=True)
    assert snapshot(sandbox) == before


def test_home_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("export A=1\n")
    monkeypatch.setenv("HOME", str(home))
    for out in (home, "~", tmp_path):
        with pytest.raises(OutputDirError, match="home directory"):
            check_output_path(out, protected=[], overwrite=True)
    assert check_output_path("~/student", protected=[], overwrite=False) == home / "student"


def test_symlinks_are_followed(sandbox: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(sandbox, target_is_directory=True)
    with pytest.raises(OutputDirError, match="contains the run's input"):
        check_output_path(link, protected=[sandbox / "teacher"], overwrite=True)
    teacher_link = tmp_path / "teacher-link"
    teacher_link.symlink_to(sandbox / "teacher", target_is_directory=True)
    with pytest.raises(OutputDirError, match="contains the run's input"):
        check_output_path(sandbox, protected=[teacher_link], overwrite=True)


def test_hub_ids_and_empty_protected_entries_are_ignored(tmp_path: Path) -> None:
    out = tmp_path / "student"
    assert check_output_path(out, protected=["", "sentence-transformers/all-MiniLM-L6-v2"], overwrite=False) == out


def test_a_file_is_refused(sandbox: Path) -> None:
    with pytest.raises(OutputDirError, match="is a file, not a folder"):
        check_output_path(sandbox / "notes.txt", protected=[], overwrite=True)


def test_a_non_empty_folder_that_is_no_student_is_refused_even_with_overwrite(sandbox: Path) -> None:
    other = sandbox / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(OutputDirError, match=r"holds no student of this library .*new or empty"):
            check_output_path(other, protected=[], overwrite=overwrite)


def test_an_earlier_student_needs_overwrite(tmp_path: Path) -> None:
    out = make_student(tmp_path / "student")
    with pytest.raises(OutputDirError, match="earlier student; pass --overwrite"):
        check_output_path(out, protected=[], overwrite=False)
    assert check_output_path(out, protected=[], overwrite=True) == out


def test_new_and_empty_folders_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    assert check_output_path(tmp_path / "empty", protected=[], overwrite=False) == tmp_path / "empty"
    assert check_output_path(tmp_path / "a" / "b" / "new", protected=[], overwrite=False) == tmp_path / "a" / "b" / "new"
    monkeypatch.chdir(tmp_path)
    assert check_output_path("rel/student", protected=[], overwrite=False) == tmp_path / "rel" / "student"
    assert list(tmp_path.iterdir()) == [tmp_path / "empty"]  # the checks create nothing


def test_a_parent_that_is_a_file_is_refused(sandbox: Path) -> None:
    with pytest.raises(OutputDirError, match=r"notes\.txt is a file, not a folder"):
        check_output_path(sandbox / "notes.txt" / "deeper" / "student", protected=[], overwrite=False)


def test_a_folder_where_files_cannot_be_created_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only mount (or an ACL) that os.access does not see: the probe file cannot be created."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(outputs.tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(OutputDirError, match=r"writing in .* failed \(Read-only file system\)"):
        check_output_path(tmp_path / "student", protected=[], overwrite=False)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_a_folder_even_root_cannot_create_files_in_is_refused() -> None:
    """sysfs takes no new files, whatever the permission bits say: the probe file finds out."""
    with pytest.raises(OutputDirError, match=r"cannot create output folder /sys/student: writing in /sys failed"):
        check_output_path("/sys/student", protected=[], overwrite=False)


def test_a_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: permission bits do not stop writes here")
        with pytest.raises(OutputDirError, match="no write permission"):
            check_output_path(locked / "student", protected=[], overwrite=False)
    finally:
        locked.chmod(0o700)


# -- staging: a folder is written completely or not at all ---------------------------------------


def test_a_failing_overwrite_run_leaves_the_old_student_byte_identical(tmp_path: Path) -> None:
    out = make_student(tmp_path / "student")
    before = snapshot(out)
    with pytest.raises(RuntimeError, match="training diverged"):
        with StagedOutput(out) as staged:
            assert staged.path.parent == out.parent and staged.path.name.startswith(".student.staging-")
            (staged.path / "model.safetensors").write_bytes(b"half written")
            raise RuntimeError("training diverged")
    assert snapshot(out) == before
    assert hidden_siblings(out) == []


def test_leaving_the_block_without_commit_discards(tmp_path: Path) -> None:
    out = make_student(tmp_path / "student")
    before = snapshot(out)
    with StagedOutput(out) as staged:
        (staged.path / STUDENT_MARKER).write_text("{}")
    assert not staged.path.exists() and snapshot(out) == before


def test_commit_replaces_the_old_student_completely(tmp_path: Path) -> None:
    out = make_student(tmp_path / "student")
    with StagedOutput(out) as staged:
        make_student(staged.path, weights=b"new weights", extra="new-only.txt")
        assert staged.commit() == out
    assert snapshot(out) == snapshot(make_student(tmp_path / "expected", weights=b"new weights", extra="new-only.txt"))
    assert hidden_siblings(out) == []


def test_commit_without_atomic_exchange_replaces_completely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    out = make_student(tmp_path / "student")
    with StagedOutput(out) as staged:
        make_student(staged.path, weights=b"new weights", extra=None)
        staged.commit()
    assert (out / "model.safetensors").read_bytes() == b"new weights" and not (out / "old-only.txt").exists()
    assert hidden_siblings(out) == []


def test_a_failed_rename_into_place_puts_the_old_student_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    out = make_student(tmp_path / "student")
    before = snapshot(out)
    rename = Path.rename
    staged = StagedOutput(out)

    def failing_rename(self: Path, target: Path) -> Path:
        if self == staged.path:
            raise OSError(28, "No space left on device")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with staged, pytest.raises(OSError, match="No space left"):
        make_student(staged.path, weights=b"new weights")
        staged.commit()
    assert snapshot(out) == before
    assert hidden_siblings(out) == []


def test_commit_creates_missing_parents_and_commits_once(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "a" / "student"
    with StagedOutput(out) as staged:
        (staged.path / STUDENT_MARKER).write_text("{}")
        staged.commit()
        with pytest.raises(OutputDirError, match="already committed"):
            staged.commit()
    assert snapshot(out) == {STUDENT_MARKER: b"{}"}


KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    from compress.outputs import StagedOutput
    staged = StagedOutput(sys.argv[1])
    (staged.path / "model.safetensors").write_bytes(b"new weights, never committed")
    print(staged.path, flush=True)
    time.sleep(120)
    staged.commit()
    """
)


def test_a_run_killed_before_commit_leaves_the_old_student_intact(tmp_path: Path) -> None:
    out = make_student(tmp_path / "student")
    before = snapshot(out)
    package_root = Path(outputs.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        staging = Path(proc.stdout.readline().strip())
        assert staging.name.startswith(".student.staging-"), "the child did not stage"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.stdout.close()
    assert snapshot(out) == before
    assert hidden_siblings(out) == [staging.name]  # the stale staging folder stays, out is intact
    assert remove_stale_siblings(out) == [staging]
    assert hidden_siblings(out) == [] and snapshot(out) == before


# -- stale siblings and checkpoints ---------------------------------------------------------------


def test_stale_cleanup_removes_only_the_library_names(tmp_path: Path) -> None:
    out = make_student(tmp_path / "student")
    ours = [tmp_path / n for n in (".student.staging-0123abcd", ".student.old-89abcdef", ".student.partial-deadbeef")]
    not_ours = (
        ".student.staging-xyz",
        ".student.staging-0123abcd0",
        ".other.staging-0123abcd",
        "student.staging-0123abcd",
        ".student.backup",
    )
    theirs = [tmp_path / n for n in not_ours]
    for folder in ours + theirs:
        folder.mkdir()
        (folder / "f.txt").write_text("x")
    (tmp_path / ".student.old-0000aaaa").write_text("a file, not a folder of ours")
    before = snapshot(out)
    assert remove_stale_siblings(out) == sorted(ours)
    assert not any(p.exists() for p in ours)
    assert all((p / "f.txt").exists() for p in theirs) and (tmp_path / ".student.old-0000aaaa").is_file()
    assert snapshot(out) == before


def test_stale_cleanup_restores_an_old_student_a_crashed_commit_left_without_out(tmp_path: Path) -> None:
    old = make_student(tmp_path / ".student.old-0123abcd")
    before = snapshot(old)
    (tmp_path / ".student.staging-89abcdef").mkdir()
    assert remove_stale_siblings(tmp_path / "student") == [tmp_path / ".student.staging-89abcdef"]
    assert snapshot(tmp_path / "student") == before and hidden_siblings(tmp_path / "student") == []


def test_checkpoints_live_beside_the_student_and_are_removed_after_success(tmp_path: Path) -> None:
    out = tmp_path / "student"
    ckpt = checkpoints_dir(out)
    assert ckpt == tmp_path / "student.checkpoints" and out not in ckpt.parents
    (ckpt / "prune" / "checkpoint-10").mkdir(parents=True)
    (ckpt / "prune" / "checkpoint-10" / "optimizer.pt").write_bytes(b"pickle")
    with StagedOutput(out) as staged:
        (staged.path / STUDENT_MARKER).write_text("{}")
        staged.commit()
    assert not list(out.rglob("*.pt")) and ckpt.is_dir()
    remove_checkpoints(out)
    assert not ckpt.exists() and out.is_dir()
    remove_checkpoints(out)  # nothing left to remove is fine
