"""Storage on `pyarrow.fs`: one code path for local disks, NFS, `s3://` and `gs://`.

Everything Esper persists (telemetry files, checkpoints, the `latest` pointer) goes through
`write_bytes_atomic`, so a reader never sees half a file: locally we write a hidden temp file,
fsync it and rename it (then fsync the directory), so not even a power loss can publish a torn file;
on an object store an object only appears when its single upload completes.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets

import pyarrow.fs as pafs

# Filesystem types (as /proc/mounts spells them) that other nodes can see too.
NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "lustre", "glusterfs", "9p", "beegfs", "gpfs",
    "fuse.gcsfuse", "fuse.s3fs", "fuse.glusterfs", "fuse.ceph", "fuse.sshfs", "fuse.juicefs",
})
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "viewfs://", "abfs://", "abfss://")
# Object stores: no directories, no rename, but an object appears only when its upload completes.
# Every other filesystem (local, HDFS, mock, ...) has directories and an atomic rename.
OBJECT_STORES = frozenset({"s3", "gcs"})


def _is_uri(uri_or_path: str) -> bool:
    return "://" in uri_or_path


def resolve_fs(uri_or_path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a URI (`s3://bucket/run`, `file:///x`) or a local path.

    Local paths are made absolute, so a run directory means the same thing after a `chdir`.
    """
    if not uri_or_path:
        raise ValueError("empty path; expected a local path or a URI such as s3://bucket/run")
    if not _is_uri(uri_or_path):
        uri_or_path = os.path.abspath(os.path.expanduser(uri_or_path))
    fs, path = pafs.FileSystem.from_uri(uri_or_path)
    return fs, path.rstrip("/") or "/"


def _mount_fstype(path: str, mounts_file: str = "/proc/mounts") -> str | None:
    """Filesystem type of the mount holding `path` (longest mount-point prefix), or None if unknown."""
    try:
        with open(mounts_file) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    path = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        # /proc/mounts escapes spaces in mount points as \040.
        mount = parts[1].replace("\\040", " ")
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, parts[2]
    return best_type


def is_node_local(uri: str, *, mounts_file: str = "/proc/mounts") -> bool:
    """True when only this machine can see `uri` (a multi-node run must refuse such a run_dir).

    Object stores and HDFS are shared; a local path is shared when its mount is a network
    filesystem (NFS, CIFS, Lustre, gcsfuse, ...).
    """
    lowered = uri.lower()
    if lowered.startswith(REMOTE_SCHEMES):
        return False
    if lowered.startswith("file://"):
        uri = uri[len("file://"):]
    elif _is_uri(uri):
        return True  # an unknown scheme (e.g. mock://) is not something other nodes can reach
    fstype = _mount_fstype(os.path.abspath(os.path.expanduser(uri)), mounts_file)
    if fstype is None:
        return True
    return not (fstype in NETWORK_FS_TYPES or fstype.startswith(("nfs", "fuse.gcsfuse", "fuse.s3fs")))


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path.strip("/") else ""


def _temp_name(path: str) -> str:
    """`.<name>.tmp-<token>` beside `path`: hidden, so `pyarrow.dataset`, `*.arrow` globs and
    `list_files` skip it, and a crash mid-write leaves nothing that looks like data."""
    head, sep, name = path.rpartition("/")
    return f"{head}{sep}.{name}.tmp-{secrets.token_hex(6)}"


# errno of an fsync on a directory where the filesystem has no such operation (some FUSE and
# network filesystems): there is nothing to make durable there, so it is not a failure.
_DIR_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


def _fsync_dir(directory: str) -> None:
    """Make the names in `directory` (a new or renamed entry) durable, as fsync does for a file's bytes."""
    fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _make_dirs_durable(directory: str) -> None:
    """`mkdir -p directory`, then fsync the parent of each directory it created (else a power loss
    could drop the new directory, and every file published in it, however well each was synced)."""
    created, d = [], directory
    while d and not os.path.isdir(d):
        created.append(d)
        d = os.path.dirname(d)
    os.makedirs(directory, exist_ok=True)
    for d in reversed(created):
        _fsync_dir(os.path.dirname(d))


def _write_local_durable(path: str, data: bytes | memoryview) -> None:
    """Local disks and NFS: temp file, fsync it, rename it over `path`, fsync the directory.

    Without the fsyncs a power loss can persist the rename before the bytes (ext4, XFS delay
    allocation), leaving a published file that is empty or truncated: a torn telemetry file.
    """
    parent = os.path.dirname(path)
    if parent:
        _make_dirs_durable(parent)
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # the open itself failed: no temp file
            os.unlink(tmp)
        raise
    _fsync_dir(parent)


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes | memoryview) -> None:
    """Write `data` to `path` so that readers see either nothing or the whole file.

    Local filesystems (including NFS): `_write_local_durable`, whose fsyncs make the file whole on
    disk before it is published. Object stores (S3, GCS): one `open_output_stream` on the final key;
    the object is created only when the upload completes on close, so there is no temp key and
    nothing to fsync. Other filesystems (HDFS, mocks): a hidden temp file through the filesystem's
    API, then a rename over the final name (atomic on POSIX and HDFS); `pyarrow.fs` offers no fsync.
    """
    if isinstance(fs, pafs.LocalFileSystem):
        _write_local_durable(path, data)
    elif fs.type_name in OBJECT_STORES:
        with fs.open_output_stream(path) as out:
            out.write(data)
    else:
        parent = _parent(path)
        if parent:
            fs.create_dir(parent, recursive=True)
        tmp = _temp_name(path)
        try:
            with fs.open_output_stream(tmp) as out:
                out.write(data)
            fs.move(tmp, path)
        except BaseException:
            try:
                fs.delete_file(tmp)
            except OSError:
                pass
            raise


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def list_files(fs: pafs.FileSystem, directory: str, suffix: str = "") -> list[str]:
    """Visible files directly under `directory` ending in `suffix`, sorted; [] if it does not exist.

    Hidden names (temp files of in-flight writes) are skipped.
    """
    infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True, recursive=False))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix)
                  and not i.base_name.startswith((".", "_")))
