"""searchmm.atomicfile on real files: replacement, failures mid-write, writers killed mid-write."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from searchmm.atomicfile import atomic_write, leftover_temps, write_bytes_atomic


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (it may change limits or die without harming pytest)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_write_creates_then_replaces_with_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    write_bytes_atomic(path, b"first")
    assert path.read_bytes() == b"first"
    old_inode = path.stat().st_ino
    write_bytes_atomic(path, b"second, longer")
    assert path.read_bytes() == b"second, longer"
    assert path.stat().st_ino != old_inode  # renamed over, never rewritten in place
    assert os.listdir(tmp_path) == ["data.bin"]


def test_streamed_writes_and_usual_permissions(tmp_path: Path) -> None:
    path = tmp_path / "stream.bin"
    with atomic_write(path) as f:
        for i in range(1000):
            f.write(i.to_bytes(4, "little"))
        assert not path.exists()  # nothing is visible before the writer finishes
    assert path.read_bytes() == b"".join(i.to_bytes(4, "little") for i in range(1000))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_exception_mid_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    write_bytes_atomic(path, b"old contents")
    with pytest.raises(KeyError, match="stop"), atomic_write(path) as f:
        f.write(b"half of the new " * 10_000)
        f.flush()
        raise KeyError("stop")
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_disk_error_mid_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    """A real EFBIG from the kernel (file size limit), raised by the write itself."""
    path = tmp_path / "data.bin"
    write_bytes_atomic(path, b"old contents")
    result = run_python(
        f"""
        import errno, resource, signal
        from searchmm.atomicfile import write_bytes_atomic
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            write_bytes_atomic({str(path)!r}, b"x" * 1_000_000)
        except OSError as exc:
            assert exc.errno == errno.EFBIG, exc
            print("raised")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "raised"
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_missing_folder_raises_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_bytes_atomic(tmp_path / "absent" / "data.bin", b"x")
    assert os.listdir(tmp_path) == []


def test_writer_killed_mid_write_leaves_a_temp_that_can_be_found(tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    write_bytes_atomic(path, b"old contents")
    write_bytes_atomic(tmp_path / "index.faiss.other", b"unrelated")
    result = run_python(
        f"""
        import os
        from searchmm.atomicfile import atomic_write
        with atomic_write({str(path)!r}) as f:
            f.write(b"partial")
            f.flush()
            os._exit(3)  # no cleanup runs, as when the process is killed
        """
    )
    assert result.returncode == 3, result.stderr
    assert path.read_bytes() == b"old contents"
    leftovers = leftover_temps(path)
    assert len(leftovers) == 1 and leftovers[0].read_bytes() == b"partial"
    assert leftovers[0].parent == tmp_path
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["index.faiss", "index.faiss.other", leftovers[0].name]
    )
    assert leftover_temps(tmp_path / "index") == []  # another file's temps are not its own
