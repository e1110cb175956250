"""Where the tests' temporary folders go (tests/conftest.py): in memory only where there is room."""

import os

from conftest import roomy_tmpfs


def test_a_small_tmpfs_is_not_used_for_the_tests_temporary_folders(tmp_path):
    free = os.statvfs(tmp_path)
    room = free.f_bavail * free.f_frsize
    assert roomy_tmpfs(str(tmp_path), needs=room + (1 << 40)) is None  # e.g. a container's 64 MiB /dev/shm
    assert roomy_tmpfs(str(tmp_path), needs=1) == str(tmp_path)


def test_a_missing_tmpfs_is_not_used(tmp_path):
    assert roomy_tmpfs(str(tmp_path / "absent")) is None
