"""docs/z2jh-values.yaml is tested, not just written: its timing adds up, its Kubernetes
pieces are valid objects, its preStop command is one the CLI accepts, and a real
`jupyter server` reads its extension settings from where z2jh mounts them."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import yaml
from test_migrate import Host, make_host
from test_server_extension import connection_file, jupyter_server, stop
from traitlets.config import Config

from nbferry.migrator.cli import build_parser

VALUES = Path(__file__).parent.parent / "docs" / "z2jh-values.yaml"
K8S = "1.33"


def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def settings(v: dict) -> dict:
    return v["singleuser"]["extraFiles"]["nbferry-settings"]["data"]["NbferryExtension"]


def test_the_grace_period_covers_the_hook_and_the_extension() -> None:
    v = values()
    c = Config()
    exec(v["hub"]["extraConfig"]["nbferry"], {"c": c})  # as the hub runs extraConfig
    grace = c.KubeSpawner.delete_grace_period
    command = v["singleuser"]["lifecycleHooks"]["preStop"]["exec"]["command"]
    assert command[0] == "nbferry"
    args = build_parser().parse_args(command[1:])
    assert args.func.__name__ == "cmd_checkpoint" and args.all
    assert args.deadline + settings(v)["stop_deadline"] + 10 <= grace


def test_hook_environment_and_service_account_are_valid_kubernetes() -> None:
    s = values()["singleuser"]
    env = [
        {"name": k, "value": x} if isinstance(x, str) else {"name": k, **x}
        for k, x in s["extraEnv"].items()
    ]
    pod = {  # the parts of KubeSpawner's pod these values fill in
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "jupyter-alice"},
        "spec": {
            "serviceAccountName": s["serviceAccountName"],
            "containers": [
                {
                    "name": "notebook",
                    "image": f"{s['image']['name']}:{s['image']['tag']}",
                    "lifecycle": s["lifecycleHooks"],
                    "env": env,
                }
            ],
        },
    }
    kubernetes_validate.validate(pod, K8S, strict=True)
    names = {e["name"] for e in env}
    assert {"NBFERRY_STORE", "NBFERRY_SIGNING_KEY", "AWS_ACCESS_KEY_ID"} <= names


def test_a_real_server_reads_the_mounted_settings(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    host: Host = make_host(tmp_path / "hub", s3_endpoint)
    out = host.nbferry("install", "--jupyter-server")
    assert out.returncode == 0, out.stderr
    data = settings(values())
    # z2jh mounts the file into /etc/jupyter/...; the user's config dir is read the same way.
    mounted = host.root / "home" / ".jupyter" / "jupyter_nbferry_config.json"
    mounted.write_text(json.dumps({"NbferryExtension": data}))
    from test_migrate import kernel_value

    with jupyter_server(host, f"s3://{s3_bucket}/hub") as (server, proc):
        _, kernel = server.start_session("nb.ipynb")
        env = kernel_value(
            connection_file(host, kernel),
            "{k: v for k, v in __import__('os').environ.items() if k.startswith('NBFERRY_')}",
        )
        stop(proc)
    log = next(host.root.glob("server-*.log")).read_text()
    assert f"stop deadline {data['stop_deadline']:g} s" in log, log
    assert env["NBFERRY_RESTORE"] == data["restore"]
    assert float(env["NBFERRY_CHECKPOINT_EVERY"]) == data["checkpoint_every"]
    assert float(env["NBFERRY_CHECKPOINT_AFTER"]) == data["checkpoint_after"]
    assert env["NBFERRY_KEEP"] == data["keep"]
    assert env["NBFERRY_NOTEBOOK_ROOT"] == str(host.work)
