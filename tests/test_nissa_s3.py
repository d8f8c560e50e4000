"""Telemetry on an S3-style object store: moto's S3 server on 127.0.0.1, reached through pyarrow's S3FileSystem."""
from __future__ import annotations

import os

import numpy as np
import pyarrow.fs as pafs
import pytest

from esper.leyline.events import transition_schema
from esper.nissa import TelemetryConfig, configure_hub, read_events, reset_hub
from esper.storage import is_node_local, read_bytes, resolve_fs, write_bytes_atomic

moto_server = pytest.importorskip("moto.server")

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def bucket_uri():
    """`s3://telemetry-test/<prefix>` URIs on a moto server that lives for this module."""
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"{host}:{port}"
        pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                          allow_bucket_creation=True).create_dir("telemetry-test")
        yield lambda prefix: f"s3://telemetry-test/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


pytestmark = pytest.mark.usefixtures("isolated_hub")


def keys(uri: str) -> list[str]:
    fs, base = resolve_fs(uri)
    return sorted(i.path[len(base) + 1:] for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))
                  if i.type == pafs.FileType.File)


def test_an_object_appears_only_when_its_upload_completes(bucket_uri):
    fs, base = resolve_fs(bucket_uri("atomic"))
    assert fs.type_name == "s3"
    stream = fs.open_output_stream(f"{base}/ckpt/policy-000001.pt")
    stream.write(b"x" * 100_000)
    assert fs.get_file_info(f"{base}/ckpt/policy-000001.pt").type == pafs.FileType.NotFound
    stream.close()
    assert fs.get_file_info(f"{base}/ckpt/policy-000001.pt").type == pafs.FileType.File
    write_bytes_atomic(fs, f"{base}/ckpt/latest", b"policy-000001.pt")  # the checkpoint pattern
    assert read_bytes(fs, f"{base}/ckpt/latest") == b"policy-000001.pt"
    assert keys(bucket_uri("atomic")) == ["ckpt/latest", "ckpt/policy-000001.pt"]  # no temp keys


def test_hub_writes_and_reader_reads_back_from_s3(bucket_uri):
    uri = bucket_uri("run1")
    assert not is_node_local(uri)
    rng = np.random.default_rng(0)
    obs = rng.random((8, 4), dtype=np.float32)
    hub = configure_hub(uri, TelemetryConfig(console=False, flush_rows=10), "runner-0",
                        transition_schema=transition_schema(4, 2, "fp"))
    for i in range(25):
        hub.emit("step", epoch=i, val_acc=0.5)
    hub.emit_columns("transition", {"step": np.arange(8), "obs": obs})
    reset_hub()
    written = keys(uri)
    assert len(written) == 4 and all(k.endswith(".arrow") and "/." not in k for k in written)
    assert read_events(uri, "step").column("epoch").to_pylist() == list(range(25))
    t = read_events(uri, "transition", obs_fingerprint="fp")
    np.testing.assert_array_equal(np.stack(t.column("obs").to_pylist()), obs)
