"""Nissa storage: filesystem resolution, node-locality, atomic writes (local and object stores)."""
from __future__ import annotations

import os

import pyarrow.fs as pafs
import pytest

from esper.storage import is_node_local, list_files, read_bytes, resolve_fs, write_bytes_atomic


def test_resolve_fs_local_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = resolve_fs("runs/a")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == str(tmp_path / "runs" / "a")
    fs, path = resolve_fs(f"file://{tmp_path}/b/")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/b"


def test_resolve_fs_s3_uri_without_network():
    fs, path = resolve_fs("s3://bucket/run/x?region=us-east-1&endpoint_override=127.0.0.1:1&scheme=http")
    assert fs.type_name == "s3" and path == "bucket/run/x"


def test_resolve_fs_rejects_empty():
    with pytest.raises(ValueError, match="empty path"):
        resolve_fs("")


def test_is_node_local_by_scheme_and_mount(tmp_path):
    assert not is_node_local("s3://bucket/run")
    assert not is_node_local("gs://bucket/run")
    assert not is_node_local("hdfs://nn/run")
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "overlay / overlay rw 0 0\n"
        "server:/export /mnt/shared nfs4 rw 0 0\n"
        "bucket /mnt/gcs fuse.gcsfuse rw 0 0\n"
        "tmpfs /mnt/shared/scratch tmpfs rw 0 0\n"
        "fs /mnt/with\\040space lustre rw 0 0\n")
    m = str(mounts)
    assert not is_node_local("/mnt/shared/runs/1", mounts_file=m)
    assert not is_node_local("/mnt/gcs/x", mounts_file=m)
    assert not is_node_local("/mnt/with space/run", mounts_file=m)
    assert is_node_local("/mnt/shared/scratch/run", mounts_file=m)  # longest prefix wins: tmpfs
    assert is_node_local("/mnt/sharedother/run", mounts_file=m)     # a prefix of the name is not a parent
    assert is_node_local("/home/user/run", mounts_file=m)
    assert not is_node_local("file:///mnt/shared/r", mounts_file=m)


def test_write_bytes_atomic_local_leaves_no_temp_and_overwrites(tmp_path):
    fs, base = resolve_fs(str(tmp_path))
    target = f"{base}/deep/dir/file.bin"
    write_bytes_atomic(fs, target, b"first")
    write_bytes_atomic(fs, target, b"second")
    assert read_bytes(fs, target) == b"second"
    assert os.listdir(tmp_path / "deep" / "dir") == ["file.bin"]


def test_write_bytes_atomic_failure_cleans_temp(tmp_path):
    fs, base = resolve_fs(str(tmp_path))
    (tmp_path / "target").mkdir()  # moving a file onto a directory fails
    with pytest.raises(OSError):
        write_bytes_atomic(fs, f"{base}/target", b"x")
    assert sorted(os.listdir(tmp_path)) == ["target"]


def test_list_files_skips_hidden_and_missing(tmp_path):
    fs, base = resolve_fs(str(tmp_path))
    assert list_files(fs, f"{base}/nope", ".arrow") == []
    for name in ("b.arrow", "a.arrow", ".a.arrow.tmp-1", "_x.arrow", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.rsplit("/", 1)[1] for p in list_files(fs, base, ".arrow")] == ["a.arrow", "b.arrow"]


def test_write_bytes_atomic_on_a_non_local_filesystem_with_rename():
    # pyarrow's in-memory mock filesystem: the temp-and-rename path, through the generic fs API only.
    # (The object-store path is tested against an S3 server in test_nissa_s3.py.)
    fs = pafs._MockFileSystem()
    write_bytes_atomic(fs, "bucket/run/latest", b"v7")
    assert read_bytes(fs, "bucket/run/latest") == b"v7"
    keys = [i.path for i in fs.get_file_info(pafs.FileSelector("bucket", recursive=True)) if i.type == pafs.FileType.File]
    assert keys == ["bucket/run/latest"]
