"""Cluster deployment: the launcher YAMLs, the Docker files, the job upload, the `esper` CLI, and
`ray start` + `ray job submit` / `ray job stop` end to end (docs/operations.md, "Cluster").

Offline throughout: the AWS YAML is bootstrapped against moto (what `ray up` resolves before it launches
anything), the Dockerfile is checked by reading it, and the end-to-end tests start a one-node Ray cluster of
their own (own ports, own temp dir, token auth with their own token) and remove every process it started.
"""
from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
import types
import zipfile
from pathlib import Path

import pytest
import ray
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from esper import cli
from esper.config import load_config
from esper.nissa import read_events
from launch_util import ROOT, SMOKE, launch_env

import psutil  # noqa: E402  (Ray vendors it in ray/thirdparty_files, on sys.path once ray is imported)

GPU_YAML = ROOT / "cluster" / "gpu.yaml"
LOCAL_YAML = ROOT / "cluster" / "local.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
RAY_BIN = str(Path(sys.executable).with_name("ray")) if Path(sys.executable).with_name("ray").exists() else "ray"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _prepared(config: dict) -> dict:
    """What `ray up` checks before it talks to the cloud: defaults merged in, then the JSON schema and rules."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _commands(config: dict, key: str) -> str:
    return "\n".join(config.get(key) or [])


# ---------------------------------------------------------------------------------------- cluster YAMLs
@pytest.mark.parametrize("path", [GPU_YAML, LOCAL_YAML], ids=["gpu", "local"])
def test_cluster_yaml_passes_ray_validation(path):
    prepared = _prepared(_load(path))
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert "~/esper" in prepared["file_mounts"]


def test_local_yaml_bootstraps_like_ray_up():
    from ray.autoscaler._private.commands import _bootstrap_config

    config = _bootstrap_config(_load(LOCAL_YAML), no_config_cache=True)
    assert config["provider"]["type"] == "local" and config["provider"]["worker_ips"]


def test_gpu_yaml_bootstraps_against_mocked_aws(monkeypatch, tmp_path):
    """`ray up`'s AWS bootstrap (IAM role, key pair, subnets, security group, node resources) on moto."""
    moto = pytest.importorskip("moto")
    from ray.autoscaler._private.aws import config as aws_config
    from ray.autoscaler._private.commands import _bootstrap_config

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                       "AWS_DEFAULT_REGION": "us-west-2", "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))      # Ray writes the new key pair to ~/.ssh/ray-autoscaler_*.pem
    monkeypatch.setattr(aws_config, "time", types.SimpleNamespace(sleep=lambda s: None))   # IAM propagation waits
    with moto.mock_aws():
        config = _bootstrap_config(_load(GPU_YAML), no_config_cache=True)
    head, worker = config["available_node_types"]["ray.head.cpu"], config["available_node_types"]["ray.worker.gpu"]
    assert head["resources"]["GPU"] == 0 and worker["resources"]["GPU"] == 1 and worker["resources"]["CPU"] >= 2
    assert worker["min_workers"] >= 1      # `runners: auto` sizes a run to the GPUs present when it starts
    assert config["head_node"]["IamInstanceProfile"]["Arn"].endswith("instance-profile/ray-autoscaler-v1")
    assert worker["node_config"]["IamInstanceProfile"] == {"Name": "ray-autoscaler-v1"}   # workers write to S3 too
    assert head["node_config"]["ImageId"] == worker["node_config"]["ImageId"]


def test_broken_cluster_yaml_is_rejected():
    import jsonschema

    good = _load(GPU_YAML)
    typo = copy.deepcopy(good)
    typo["available_node_types"]["ray.worker.gpu"]["min_workerz"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_workerz"):
        _prepared(typo)
    no_head = copy.deepcopy(good)
    no_head["head_node_type"] = "ray.head.missing"
    with pytest.raises(ValueError, match="head_node_type"):
        _prepared(no_head)
    too_many = copy.deepcopy(good)
    too_many["available_node_types"]["ray.worker.gpu"]["min_workers"] = good["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        _prepared(too_many)


def test_gpu_yaml_sets_up_esper_storage_stop_wait_and_metrics():
    config = _load(GPU_YAML)
    setup = _commands(config, "setup_commands")
    assert 'test -n "$ESPER_IMAGE" || pip install' in setup and "~/esper" in setup     # idempotent, skipped on the image
    assert "esper.cli data cifar10 --root /data/cifar10" in setup
    assert load_config(ROOT / "configs" / "cifar10.yaml").tolaria.data.root == "/data/cifar10"
    head = _commands(config, "head_start_ray_commands")
    assert int(re.search(r"RAY_JOB_STOP_WAIT_TIME_S=(\d+)", head).group(1)) >= 60
    assert re.search(r"ESPER_RUN_ROOT=s3://\S+", head)
    assert "--metrics-export-port" in head and "--dashboard-host=0.0.0.0" in head
    assert "cluster/metrics.sh start" in head and "cluster/metrics.sh install" in _commands(config, "head_setup_commands")
    for path in (GPU_YAML, LOCAL_YAML):
        assert "RAY_JOB_STOP_WAIT_TIME_S" in _commands(_load(path), "head_start_ray_commands")
    subprocess.run(["bash", "-n", str(ROOT / "cluster" / "metrics.sh")], check=True)


# ---------------------------------------------------------------------------------------- Docker
def _dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def _image_ray_version(image: str) -> str:
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(gpu|cpu|cu\d+)", image)
    assert match, f"{image!r} is not a rayproject/ray:<version>-py<XY>-<gpu|cpu|cuXXX> tag"
    return match.group(1)


def test_ray_versions_agree_across_images_yamls_pyproject_and_this_ray():
    instructions = _dockerfile()
    args = dict(arg.split("=", 1) for kind, arg in instructions if kind == "ARG" and "=" in arg)
    froms = [arg for kind, arg in instructions if kind == "FROM"]
    assert froms == ["${BASE_IMAGE}"]
    docker_version = _image_ray_version(args["BASE_IMAGE"])
    assert args["RAY_VERSION"] == docker_version
    gpu_image = _load(GPU_YAML)["docker"]["image"]
    assert _image_ray_version(gpu_image) == docker_version and gpu_image == args["BASE_IMAGE"]
    for path in (GPU_YAML, LOCAL_YAML):
        pins = set(re.findall(r"ray\[default\]==([\d.]+)", path.read_text()))
        assert pins == {docker_version}, (path, pins)
    requirement = next(Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                       if Requirement(d).name == "ray")
    assert Version(docker_version) in requirement.specifier
    assert docker_version == ray.__version__     # the Ray you run `ray up` / `ray job submit` with


def test_dockerfile_installs_esper_as_the_ray_user_without_data():
    instructions = _dockerfile()
    kinds = [k for k, _ in instructions]
    assert "ENTRYPOINT" not in kinds and "CMD" not in kinds          # the cluster launcher runs its own commands
    users = [arg for k, arg in instructions if k == "USER"]
    assert users[-1] == "ray"                                          # non-root, as Ray's images are
    copies = [arg.split() for k, arg in instructions if k == "COPY"]
    sources = [src for parts in copies for src in parts[1:-1] if not src.startswith("--")]
    assert sorted(sources) == ["README.md", "configs/", "esper/", "pyproject.toml"]   # never the whole context
    runs = " ".join(arg for k, arg in instructions if k == "RUN")
    assert "--no-cache-dir" in runs and "pip install --no-cache-dir --no-deps ." in runs
    # The dependency layer (torch) comes before the Esper source is copied, so code changes rebuild only the last layer.
    first_esper_copy = next(i for i, (k, a) in enumerate(instructions) if k == "COPY" and "esper/" in a)
    deps_run = next(i for i, (k, a) in enumerate(instructions) if k == "RUN" and "requirements.txt" in a)
    assert deps_run < first_esper_copy
    assert any(k == "ENV" and "ESPER_IMAGE=1" in a for k, a in instructions)


def test_dockerignore_excludes_runs_data_git_venvs_and_caches():
    patterns = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")}
    for needed in ("runs", "data", ".git", ".venv", "venv", "**/__pycache__", ".pytest_cache", "*.egg-info"):
        assert needed in patterns, needed
    for kept in ("esper", "configs", "pyproject.toml", "README.md"):   # what the Dockerfile copies
        assert kept not in patterns


# ---------------------------------------------------------------------------------------- job upload
def _package(directory: Path, out: Path, include_gitignore: bool) -> zipfile.ZipFile:
    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import create_package

    create_package(str(directory), out, include_gitignore=include_gitignore,
                   excludes=ray_constants.get_runtime_env_default_excludes())
    return zipfile.ZipFile(out)


def test_working_dir_upload_leaves_out_runs_data_venvs_and_caches(tmp_path):
    """What `ray job submit --working-dir .` would upload, built with Ray's own packaging code."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    repo = tmp_path / "repo"
    for name in listed:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    junk = ["runs/20260101-ppo/telemetry/step/a.arrow", "runs/x/checkpoints/policy-v00000001.pt",
            "data/cifar10/cifar-10-batches-py/data_batch_1", ".venv/lib/site.py", "venv/bin/python",
            ".git/objects/ab/cdef", "esper/__pycache__/cli.cpython-311.pyc", ".pytest_cache/v/cache",
            "esper.egg-info/PKG-INFO", ".ci-venv/bin/python"]
    for name in junk:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(os.urandom(1 << 20))
    for include_gitignore in (True, False):       # False: RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1, .rayignore alone
        names = set(_package(repo, tmp_path / f"pkg-{include_gitignore}.zip", include_gitignore).namelist())
        leaked = [n for n in names if n in junk or "__pycache__" in n
                  or n.split("/")[0] in {"runs", "data", ".venv", "venv", ".git", ".pytest_cache", "esper.egg-info", ".ci-venv"}]
        assert not leaked, (include_gitignore, leaked)
        assert {"esper/cli.py", "esper/launch/main.py", "configs/cifar10.yaml", "configs/smoke.yaml"} <= names
    real = tmp_path / "real.zip"
    _package(ROOT, real, include_gitignore=True)
    print(f"working-dir upload of {ROOT}: {real.stat().st_size / 1024:.0f} KiB (Ray's limit: "
          f"{GCS_STORAGE_MAX_SIZE >> 20} MiB)")
    assert real.stat().st_size < 8 << 20


# ---------------------------------------------------------------------------------------- configs and CLI
def test_cifar10_config_loads():
    cfg = load_config(ROOT / "configs" / "cifar10.yaml")
    data, training = cfg.tolaria.data, cfg.tolaria.training
    assert (data.dataset, data.download, data.train_size, data.val_size, data.test_size, data.augment) == \
        ("cifar10", True, 0, 5000, 10000, True)
    assert (training.batch_size, training.eval_batch_size) == (512, 2048)
    assert cfg.simic.env.max_epochs == 25 and cfg.runtime.envs_per_runner == 4 and cfg.runtime.total_updates
    assert cfg.storage.run_dir is None          # runs go under ESPER_RUN_ROOT or --run-dir, never one fixed folder


def test_cli_config(capsys):
    assert cli.main(["config", "--config", str(ROOT / "configs" / "cifar10.yaml"), "--set", "runtime.runners=8"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["runtime"]["runners"] == 8 and printed["tolaria"]["data"]["dataset"] == "cifar10"
    assert cli.main(["config", "--set", "runtime.mode=fast"]) == 2
    assert "runtime.mode" in capsys.readouterr().err


def test_cli_data_cifar10_errors_are_clear(tmp_path, capsys, monkeypatch):
    assert cli.main(["data", "cifar10", "--root", str(tmp_path / "none"), "--no-download"]) == 1
    err = capsys.readouterr().err
    assert "CIFAR-10 not found" in err and "data_batch_1" in err

    import torchvision.datasets

    def offline(*_a, **_k):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    assert cli.main(["data", "cifar10", "--root", str(tmp_path / "offline")]) == 1
    err = capsys.readouterr().err
    assert "could not download CIFAR-10" in err and "cifar-10-python.tar.gz" in err

    folder = tmp_path / "staged" / "cifar-10-batches-py"      # already staged: nothing to download
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"")
    assert cli.main(["data", "cifar10", "--root", str(tmp_path / "staged")]) == 0
    assert "CIFAR-10 ready" in capsys.readouterr().out


def test_cli_report_and_export_of_a_missing_run(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "none")]) == 1
    assert cli.main(["export", str(tmp_path / "none"), str(tmp_path / "out")]) == 1
    assert "no telemetry" in capsys.readouterr().err


def test_esper_console_script_is_the_cli():
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="esper")
    assert script.load() is cli.main


# ---------------------------------------------------------------------------------------- ray start + jobs
def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Head:
    """A one-node Ray cluster started with `ray start --head`, its dashboard serving the Jobs API."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.temp_dir = Path(tempfile.mkdtemp(prefix="esper-ray-", dir="/tmp"))   # short: Ray's socket paths
        token = base / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.run_root = base / "runs"
        # Token auth, with a token of its own (not ~/.ray/auth_token); the job supervisor and drivers
        # inherit RAY_JOB_STOP_WAIT_TIME_S and ESPER_RUN_ROOT from `ray start`, as on cluster/gpu.yaml's head.
        self.env = launch_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        (gcs, dashboard, client, agent, agent_grpc, env_agent, metrics, node_manager, object_manager) = _free_ports(9)
        self.address = f"http://127.0.0.1:{dashboard}"
        cmd = [RAY_BIN, "start", "--head", f"--port={gcs}", "--num-cpus=2", "--num-gpus=0",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
               f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
               f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
               f"--metrics-export-port={metrics}", f"--node-manager-port={node_manager}",
               f"--object-manager-port={object_manager}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats"]
        start_env = {**self.env, "RAY_JOB_STOP_WAIT_TIME_S": "60", "ESPER_RUN_ROOT": str(self.run_root)}
        # `ray start` (without --block) returns once the node is up; its daemons stay in its process group.
        proc = subprocess.Popen(cmd, env=start_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        self.pgid = proc.pid
        try:
            out, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            out = "(timed out)"
        if proc.returncode != 0:
            self.stop()
            pytest.fail(f"ray start failed:\n{out}")

    def ray(self, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([RAY_BIN, *args], env=env or self.env, capture_output=True, text=True, timeout=timeout)

    def job(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.ray("job", args[0], "--address", self.address, *args[1:], timeout=timeout)

    def _ours(self) -> list[psutil.Process]:
        mine = []
        for p in psutil.process_iter():
            try:
                if p.pid == os.getpid():
                    continue
                if os.getpgid(p.pid) == self.pgid or str(self.temp_dir) in " ".join(p.cmdline()) \
                        or p.cwd().startswith(str(self.temp_dir)):
                    mine.append(p)
            except (psutil.Error, ProcessLookupError, OSError):
                pass
        return mine

    def stop(self) -> list[str]:
        """Terminate every process of this cluster (and only those); returns what was still alive after."""
        procs = self._ours()
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=15)
        left = []
        for p in self._ours():
            try:
                left.append(f"{p.pid} {p.name()}")
            except psutil.Error:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    h = Head(tmp_path_factory.mktemp("cluster"))
    try:
        yield h
    finally:
        left = h.stop()
    assert not left, f"processes of the test cluster still alive: {left}"


def _entrypoint(*args: str) -> list[str]:
    # On a real cluster the entrypoint is plain `python` (the image's, with Esper installed); here the
    # job must use this venv's interpreter, which the cluster's PATH may not lead to.
    return ["--", sys.executable, "-m", "esper.launch", *args]


def _run_dir_from(log: str) -> Path:
    return Path(re.search(r"\[esper\] run dir: (\S+)", log).group(1))


@pytest.mark.e2e
def test_token_auth_is_required_by_the_test_cluster(head):
    env = {k: v for k, v in head.env.items() if k != "RAY_AUTH_MODE"}       # the client sends no token
    out = head.ray("job", "list", "--address", head.address, env=env, timeout=60)
    assert out.returncode != 0 and "Authentication" in out.stdout + out.stderr
    assert head.job("list", timeout=60).returncode == 0


@pytest.mark.e2e
def test_job_submit_runs_the_smoke_config_on_the_cluster(head, tmp_path, capsys):
    submission = f"esper-smoke-{secrets.token_hex(3)}"
    out = head.job("submit", "--submission-id", submission, "--working-dir", str(ROOT),
                   *_entrypoint("--config", "configs/smoke.yaml", "--set", "runtime.total_updates=3"))
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert f"Job '{submission}' succeeded" in head.job("status", submission, timeout=60).stdout
    assert "Ray cluster" in log and "1 node(s)" in log            # joined the job's cluster via RAY_ADDRESS
    assert "[esper] update 3/3" in log
    run_dir = _run_dir_from(log)
    assert run_dir.parent == head.run_root                        # named under ESPER_RUN_ROOT from `ray start`
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_by"] == "target reached" and summary["updates"] == 3
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["version"] == summary["policy_version"]
    ids = read_events(str(run_dir), "episode").column("episode_id").to_pylist()
    assert len(ids) == len(set(ids)) == summary["episodes"] > 0
    assert read_events(str(run_dir), "learner").num_rows == 3
    # The CLI's report and export on the job's run directory.
    assert cli.main(["export", str(run_dir), str(tmp_path / "parquet"), "--events", "episode,learner"]) == 0
    assert sorted(p.name for p in (tmp_path / "parquet").iterdir()) == ["episode.parquet", "learner.parquet"]
    assert cli.main(["report", str(run_dir), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").exists()


@pytest.mark.e2e
def test_job_stop_leaves_a_final_checkpoint_and_complete_telemetry(head, tmp_path):
    submission = f"esper-stop-{secrets.token_hex(3)}"
    run_dir = tmp_path / "run"
    out = head.job("submit", "--no-wait", "--submission-id", submission, "--working-dir", str(ROOT),
                   *_entrypoint("--config", "configs/smoke.yaml", "--run-dir", str(run_dir),
                                "--set", "runtime.total_updates=200"))
    assert out.returncode == 0, out.stdout + out.stderr
    follow = subprocess.Popen([RAY_BIN, "job", "logs", "--follow", "--address", head.address, submission],
                              env=head.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        for line in follow.stdout:              # the job log streams; stop it once an update is logged
            lines.append(line)
            if "[esper] update 1/200" in line:
                break
        stop = head.job("stop", submission, timeout=180)
    finally:
        follow.terminate()
        follow.communicate(timeout=60)
    assert any("[esper] update 1/200" in ln for ln in lines), "".join(lines)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"Job '{submission}' was stopped" in head.job("status", submission, timeout=60).stdout
    log = head.job("logs", submission, timeout=60).stdout
    assert "[esper] stopped (SIGTERM)" in log, log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and 1 <= summary["updates"] < 200
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert latest["version"] == summary["policy_version"] and (run_dir / "checkpoints" / latest["file"]).exists()
    versions = read_events(str(run_dir), "learner").column("policy_version").to_pylist()
    assert max(versions) == summary["policy_version"]
    ids = read_events(str(run_dir), "episode").column("episode_id").to_pylist()
    assert len(ids) == len(set(ids)) == summary["episodes"]
    kinds = read_events(str(run_dir), "system").column("kind").to_pylist()
    assert "stop" in kinds and "checkpoint" in kinds



def test_new_run_dirs_go_under_esper_run_root(monkeypatch):
    from esper.launch.main import _new_run_dir

    cfg = load_config(ROOT / "configs" / "smoke.yaml")
    monkeypatch.delenv("ESPER_RUN_ROOT", raising=False)
    assert _new_run_dir(cfg).startswith("runs/")
    monkeypatch.setenv("ESPER_RUN_ROOT", "s3://bucket/esper-runs/")
    assert re.fullmatch(r"s3://bucket/esper-runs/\d{8}-\d{6}-ppo-[0-9a-f]{4}", _new_run_dir(cfg))
    monkeypatch.setenv("ESPER_RUN_ROOT", "/mnt/shared/runs")
    assert _new_run_dir(cfg).startswith("/mnt/shared/runs/")
    explicit = load_config(ROOT / "configs" / "smoke.yaml", ["storage.run_dir=s3://bucket/mine"])
    assert _new_run_dir(explicit) == "s3://bucket/mine"       # --run-dir / storage.run_dir win


@pytest.mark.e2e
def test_a_launch_without_address_starts_its_own_ray_even_with_a_cluster_running(head, tmp_path):
    # Without --address or RAY_ADDRESS the launcher must not join a Ray that merely runs on this machine
    # (it may be a previous launch shutting down); it says in its first line what it did.
    run_dir = tmp_path / f"own-ray-{secrets.token_hex(3)}"        # its name is in the namespace of its actors
    out = subprocess.run([sys.executable, "-m", "esper.launch", "--config", SMOKE, "--run-dir", str(run_dir),
                          "--no-dashboard", "--set", "runtime.total_updates=1"], cwd=ROOT, env=launch_env(),
                         capture_output=True, text=True, timeout=240, start_new_session=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0].startswith("[esper] Ray: started a new local Ray"), out.stdout
    assert "Ray local" in out.stdout
    actors = head.ray("list", "actors", "--address", head.address, "--format", "json", timeout=60)
    assert actors.returncode == 0, actors.stdout + actors.stderr
    assert run_dir.name not in actors.stdout                      # none of its actors ever ran on the cluster
