"""Storage on `pyarrow.fs`: one code path for local disks, NFS, `s3://` and `gs://`.

Everything Esper persists (telemetry files, checkpoints, the `latest` pointer) goes through
`write_bytes_atomic`, so a reader never sees half a file: locally we write a hidden temp file and
rename it; on an object store an object only appears when its single upload completes.
"""
from __future__ import annotations

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


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes | memoryview) -> None:
    """Write `data` to `path` so that readers see either nothing or the whole file.

    Object stores (S3, GCS): one `open_output_stream` on the final key; the object is created only
    when the upload completes on close, so there is no temp key to clean up. Other filesystems:
    write `.<name>.tmp-<token>` beside the target (a hidden name that `pyarrow.dataset` and
    `*.arrow` globs skip, so a crash mid-write leaves nothing that looks like data), then rename it
    over the final name (atomic on POSIX and HDFS; on NFS the rename is atomic on the server).
    """
    if fs.type_name not in OBJECT_STORES:
        parent = _parent(path)
        if parent:
            fs.create_dir(parent, recursive=True)
        name = path.rsplit("/", 1)[-1]
        tmp = f"{parent}/.{name}.tmp-{secrets.token_hex(6)}" if parent else f".{name}.tmp-{secrets.token_hex(6)}"
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
    else:
        with fs.open_output_stream(path) as out:
            out.write(data)


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
