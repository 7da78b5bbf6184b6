"""The Helm chart (helm/nbferry): lints, renders, and every manifest is valid Kubernetes.

Rendering uses the real Helm engine (helm-python-sdk bundles Helm as a shared
library) and each rendered object is validated against the Kubernetes OpenAPI
schemas shipped by kubernetes-validate, in strict mode (unknown fields fail).
"""

from __future__ import annotations

import base64
import copy
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "nbferry"
RELEASE = "ferry"
NAMESPACE = "notebooks"
FULLNAME = "ferry-nbferry"
# The oldest Kubernetes the chart is checked against, and the newest the
# validator ships.
K8S_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())

# The values without defaults: store, token, signing key.
REQUIRED: dict[str, Any] = {
    "store": {"url": "s3://nbferry-test/checkpoints"},
    "auth": {"token": "t0ken"},
    "signing": {"key": "s1gning-key"},
}

# Every option on, every secret supplied by the operator.
EVERYTHING: dict[str, Any] = {
    "replicas": 3,
    "image": {"repository": "registry.example/nbferry", "tag": "9.9.9", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "store": {
        "url": "s3://nbferry-test/checkpoints",
        "endpointUrl": "http://minio.storage:9000",
        "region": "eu-central-1",
        "credentials": {
            "existingSecret": "s3-creds",
            "accessKeyIdKey": "id",
            "secretAccessKeyKey": "secret",
        },
    },
    "auth": {"existingSecret": "migrator-token", "existingSecretKey": "bearer"},
    "signing": {"existingSecret": "nbferry-signing", "existingSecretKey": "hmac"},
    "tls": {
        "enabled": True,
        "secretName": "migrator-tls",
        "clientCA": {"enabled": True, "secretName": "clients-ca", "key": "bundle.pem"},
    },
    "containerPort": 9443,
    "terminationGracePeriodSeconds": 300,
    "extraArgs": ["--store-option", "anon=false"],
    "extraEnv": [{"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}],
    "workdir": {"sizeLimit": "20Gi", "medium": "Memory"},
    "service": {"type": "ClusterIP", "port": 443, "annotations": {"a.example/b": "c"}},
    "serviceAccount": {
        "create": True,
        "name": "ferry-sa",
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/nbferry"},
    },
    "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "16Gi"}},
    "podAnnotations": {"prometheus.io/scrape": "false"},
    "podLabels": {"team": "data"},
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "tolerations": [{"key": "big-memory", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {
                            "matchLabels": {"app.kubernetes.io/component": "migrator"}
                        },
                    },
                }
            ]
        }
    },
    "gc": {
        "enabled": True,
        "schedule": "0 */6 * * *",
        "timeZone": "Europe/Berlin",
        "keepLast": 3,
        "keepHourly": 12,
        "keepDaily": 30,
        "grace": "30m",
        "extraArgs": ["--json"],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "podAnnotations": {"sidecar.istio.io/inject": "false"},
    },
}

# S3 keys given as values: the chart keeps them in its own Secret.
S3_KEYS: dict[str, Any] = {"store": {"credentials": {"accessKeyId": "AK", "secretAccessKey": "SK"}}}


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge value layers, later ones winning."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


# Chart-made Secret for the S3 keys, no ServiceAccount, server-only TLS, gc on.
MIXED = merged(
    REQUIRED,
    S3_KEYS,
    {"serviceAccount": {"create": False}, "tls": {"enabled": True, "secretName": "t"}},
    {"gc": {"enabled": True}, "livenessProbe": {"enabled": False}},
)


@pytest.fixture(scope="module")
def chart():
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm_python.Chart, values: dict[str, Any]) -> dict[tuple[str, str], dict]:
    """Render the chart; the manifests keyed by (kind, name)."""
    manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    objects: dict[tuple[str, str], dict] = {}
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in objects, f"{key} rendered twice"
                objects[key] = doc
    return objects


def container(objects: dict[tuple[str, str], dict], kind: str = "Deployment") -> dict:
    (obj,) = [o for (k, _), o in objects.items() if k == kind]
    spec = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    return c


def pod_spec(objects: dict[tuple[str, str], dict]) -> dict:
    return objects["Deployment", FULLNAME]["spec"]["template"]["spec"]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c["env"]}


def secret_ref(c: dict, name: str) -> tuple[str, str]:
    ref = env_of(c)[name]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def option(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, (flag, args)
    return args[args.index(flag) + 1]


def test_chart_version_follows_pyproject(chart) -> None:
    (version,) = re.findall(
        r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE
    )
    meta = chart.metadata
    assert (meta["apiVersion"], meta["name"], meta["version"]) == ("v2", "nbferry", "0.1.0")
    assert meta["appVersion"] == version


@pytest.mark.parametrize("values", [REQUIRED, EVERYTHING], ids=["required", "everything"])
def test_lint(values: dict[str, Any]) -> None:
    report = helm_python.lint(CHART, values, strict=True, kube_version="v1.33.0")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


@pytest.mark.parametrize(
    ("values", "kinds"),
    [
        (REQUIRED, {"ConfigMap", "Secret", "Deployment", "Service", "ServiceAccount"}),
        (EVERYTHING, {"ConfigMap", "Deployment", "Service", "ServiceAccount", "CronJob"}),
        (MIXED, {"ConfigMap", "Secret", "Deployment", "Service", "CronJob"}),
    ],
    ids=["required", "everything", "mixed"],
)
def test_rendered_manifests_are_valid_kubernetes(chart, values, kinds) -> None:
    objects = render(chart, values)
    assert {kind for kind, _ in objects} == kinds
    for obj in objects.values():
        assert obj["metadata"]["namespace"] == NAMESPACE
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/name"] == "nbferry"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "nbferry-0.1.0"
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} @ {version}: {where}: {exc}")


def test_defaults(chart) -> None:
    objects = render(chart, REQUIRED)
    deployment = objects["Deployment", FULLNAME]
    assert deployment["spec"]["replicas"] == 2
    pod = pod_spec(objects)
    c = container(objects)
    assert c["image"] == "ghcr.io/nbferry/nbferry:0.1.0"
    assert c["command"] == ["nbferry"]
    args = c["args"]
    assert args[0] == "serve"
    assert option(args, "--listen") == "0.0.0.0:7878"
    assert option(args, "--token-file") == "/var/run/nbferry/token/token"
    assert option(args, "--workdir") == "/work"
    # The server drains a little under the time Kubernetes gives it.
    assert pod["terminationGracePeriodSeconds"] == 60
    assert option(args, "--grace") == "55"
    assert not [a for a in args if a.startswith("--tls")]

    # The pods run unprivileged.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False

    # The Service reaches the pods (and only them) on the named gRPC port.
    service = objects["Service", FULLNAME]
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port == {
        "name": "grpc",
        "port": 7878,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }
    assert [p["name"] for p in c["ports"]] == ["grpc"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]

    # The pod's ServiceAccount is the one the chart made.
    assert pod["serviceAccountName"] == FULLNAME
    assert ("ServiceAccount", FULLNAME) in objects

    # The store URL arrives through the ConfigMap; no S3 keys without credentials.
    assert c["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]
    assert objects["ConfigMap", FULLNAME]["data"] == {
        "NBFERRY_STORE": "s3://nbferry-test/checkpoints"
    }
    assert "AWS_ACCESS_KEY_ID" not in env_of(c)


@pytest.mark.parametrize("tls", [False, True])
def test_probes_use_the_container_port(chart, tls: bool) -> None:
    values = merged(REQUIRED, {"containerPort": 9000})
    if tls:
        values = merged(values, {"tls": {"enabled": True, "secretName": "migrator-tls"}})
    c = container(render(chart, values))
    (port,) = c["ports"]
    assert port == {"name": "grpc", "containerPort": 9000, "protocol": "TCP"}
    assert option(c["args"], "--listen") == "0.0.0.0:9000"
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        if tls:
            # Kubelet's gRPC probes speak plaintext only.
            assert "grpc" not in probe
            assert probe["tcpSocket"] == {"port": "grpc"}
        else:
            assert probe["grpc"] == {"port": 9000}  # grpc.health.v1, overall ("") service
            assert "tcpSocket" not in probe


def test_probes_can_be_turned_off(chart) -> None:
    values = merged(REQUIRED, {"livenessProbe": {"enabled": False}})
    c = container(render(chart, values))
    assert "livenessProbe" not in c
    assert c["readinessProbe"]["grpc"] == {"port": 7878}


def mounted_file(objects: dict[tuple[str, str], dict], path: str) -> tuple[str, str]:
    """(Secret name, key) that the container sees at `path`."""
    c = container(objects)
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    directory, _, filename = path.rpartition("/")
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == directory]
    assert mount.get("readOnly") is True
    secret = volumes[mount["name"]]["secret"]
    (key,) = [item["key"] for item in secret["items"] if item["path"] == filename]
    return secret["secretName"], key


def test_tls_flags_only_with_tls(chart) -> None:
    plain = render(chart, REQUIRED)
    assert not [a for a in container(plain)["args"] if "tls" in a]
    assert {v["name"] for v in pod_spec(plain)["volumes"]} == {"token", "work"}

    server_only = render(chart, merged(REQUIRED, {"tls": {"enabled": True, "secretName": "crt"}}))
    args = container(server_only)["args"]
    assert mounted_file(server_only, option(args, "--tls-cert")) == ("crt", "tls.crt")
    assert mounted_file(server_only, option(args, "--tls-key")) == ("crt", "tls.key")
    assert "--tls-client-ca" not in args

    # Mutual TLS: the client CA defaults to the ca.crt of the server's Secret.
    mutual = merged(
        REQUIRED, {"tls": {"enabled": True, "secretName": "crt", "clientCA": {"enabled": True}}}
    )
    objects = render(chart, mutual)
    args = container(objects)["args"]
    assert mounted_file(objects, option(args, "--tls-client-ca")) == ("crt", "ca.crt")

    objects = render(chart, EVERYTHING)
    args = container(objects)["args"]
    assert mounted_file(objects, option(args, "--tls-cert")) == ("migrator-tls", "tls.crt")
    assert mounted_file(objects, option(args, "--tls-client-ca")) == ("clients-ca", "bundle.pem")


def test_everything(chart) -> None:
    objects = render(chart, EVERYTHING)
    deployment = objects["Deployment", FULLNAME]
    pod = pod_spec(objects)
    c = container(objects)
    assert deployment["spec"]["replicas"] == 3
    assert c["image"] == "registry.example/nbferry:9.9.9"
    assert c["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    # extraArgs go last, after the chart's own flags.
    assert c["args"][-2:] == ["--store-option", "anon=false"]
    assert option(c["args"], "--grace") == "295"
    assert pod["terminationGracePeriodSeconds"] == 300

    # Secrets come from the operator's Secrets, under the operator's keys.
    assert mounted_file(objects, "/var/run/nbferry/token/token") == ("migrator-token", "bearer")
    assert secret_ref(c, "NBFERRY_SIGNING_KEY") == ("nbferry-signing", "hmac")
    assert secret_ref(c, "AWS_ACCESS_KEY_ID") == ("s3-creds", "id")
    assert secret_ref(c, "AWS_SECRET_ACCESS_KEY") == ("s3-creds", "secret")
    assert ("Secret", FULLNAME) not in objects  # nothing left for the chart to hold
    assert env_of(c)["AWS_STS_REGIONAL_ENDPOINTS"]["value"] == "regional"
    assert objects["ConfigMap", FULLNAME]["data"] == {
        "NBFERRY_STORE": "s3://nbferry-test/checkpoints",
        "NBFERRY_S3_ENDPOINT_URL": "http://minio.storage:9000",
        "AWS_REGION": "eu-central-1",
        "AWS_DEFAULT_REGION": "eu-central-1",
    }

    # IRSA: the role annotation lands on the ServiceAccount the pods use.
    account = objects["ServiceAccount", "ferry-sa"]
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/nbferry"
    }
    assert pod["serviceAccountName"] == "ferry-sa"

    template = deployment["spec"]["template"]["metadata"]
    assert template["annotations"]["prometheus.io/scrape"] == "false"
    assert template["labels"]["team"] == "data"
    assert pod["nodeSelector"] == EVERYTHING["nodeSelector"]
    assert pod["tolerations"] == EVERYTHING["tolerations"]
    assert pod["affinity"] == EVERYTHING["affinity"]
    work = next(v for v in pod["volumes"] if v["name"] == "work")
    assert work == {"name": "work", "emptyDir": {"medium": "Memory", "sizeLimit": "20Gi"}}
    assert objects["Service", FULLNAME]["spec"]["ports"][0]["port"] == 443


def test_gc_cronjob(chart) -> None:
    assert not [k for k, _ in render(chart, REQUIRED) if k == "CronJob"]

    objects = render(chart, EVERYTHING)
    cron = objects["CronJob", f"{FULLNAME}-gc"]
    assert cron["spec"]["schedule"] == "0 */6 * * *"
    assert cron["spec"]["timeZone"] == "Europe/Berlin"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    gc = container(objects, "CronJob")
    assert gc["command"] == ["nbferry"]
    assert gc["args"] == [
        "gc", "--keep-last", "3", "--keep-hourly", "12", "--keep-daily", "30",
        "--grace", "30m", "--json",
    ]  # fmt: skip
    migrator = container(objects)
    # The same store, credentials and signing key as the migrator.
    assert gc["envFrom"] == migrator["envFrom"]
    for name in ("NBFERRY_SIGNING_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert secret_ref(gc, name) == secret_ref(migrator, name)
    job_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert job_pod["serviceAccountName"] == "ferry-sa"
    assert job_pod["restartPolicy"] == "Never"
    assert gc["securityContext"]["capabilities"]["drop"] == ["ALL"]

    # Defaults, with the S3 keys in the chart's Secret.
    objects = render(chart, merged(REQUIRED, S3_KEYS, {"gc": {"enabled": True}}))
    gc = container(objects, "CronJob")
    assert gc["args"] == [
        "gc", "--keep-last", "5", "--keep-hourly", "24", "--keep-daily", "7", "--grace", "24h"
    ]  # fmt: skip
    assert secret_ref(gc, "AWS_ACCESS_KEY_ID") == (FULLNAME, "AWS_ACCESS_KEY_ID")
    assert secret_ref(gc, "NBFERRY_SIGNING_KEY") == (FULLNAME, "signing-key")


def test_chart_made_secret(chart) -> None:
    values = merged(REQUIRED, S3_KEYS)
    objects = render(chart, values)
    secret = objects["Secret", FULLNAME]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {
        "token": "t0ken",
        "signing-key": "s1gning-key",
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": "SK",
    }
    c = container(objects)
    assert mounted_file(objects, "/var/run/nbferry/token/token") == (FULLNAME, "token")
    assert secret_ref(c, "NBFERRY_SIGNING_KEY") == (FULLNAME, "signing-key")
    assert secret_ref(c, "AWS_ACCESS_KEY_ID") == (FULLNAME, "AWS_ACCESS_KEY_ID")
    assert secret_ref(c, "AWS_SECRET_ACCESS_KEY") == (FULLNAME, "AWS_SECRET_ACCESS_KEY")

    # One secret from the operator, the rest from the chart.
    values = merged(values, {"auth": {"token": "", "existingSecret": "tok"}})
    objects = render(chart, values)
    assert "token" not in objects["Secret", FULLNAME]["data"]
    assert mounted_file(objects, "/var/run/nbferry/token/token") == ("tok", "token")
    assert secret_ref(container(objects), "NBFERRY_SIGNING_KEY") == (FULLNAME, "signing-key")


def checksums(chart, values: dict[str, Any]) -> dict[str, str]:
    objects = render(chart, values)
    annotations = objects["Deployment", FULLNAME]["spec"]["template"]["metadata"]["annotations"]
    return {k: v for k, v in annotations.items() if k.startswith("checksum/")}


def test_checksums_roll_the_pods_on_config_and_secret_changes(chart) -> None:
    base = checksums(chart, REQUIRED)
    assert set(base) == {"checksum/config", "checksum/secret"}
    assert checksums(chart, REQUIRED) == base  # deterministic

    store = checksums(chart, merged(REQUIRED, {"store": {"endpointUrl": "http://minio:9000"}}))
    assert store["checksum/config"] != base["checksum/config"]
    assert store["checksum/secret"] == base["checksum/secret"]

    for change in ({"auth": {"token": "new"}}, {"signing": {"key": "new"}}):
        secret = checksums(chart, merged(REQUIRED, change))
        assert secret["checksum/secret"] != base["checksum/secret"], change
        assert secret["checksum/config"] == base["checksum/config"]

    # Values that only change the pod spec need no checksum to roll it.
    assert checksums(chart, merged(REQUIRED, {"replicas": 5})) == base


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"auth": {"token": ""}}, "the migrator needs a token: set auth.token"),
        ({"signing": {"key": ""}}, "needs the signing key"),
        ({"store": {"url": ""}}, "store.url is required"),
        ({"tls": {"enabled": True}}, "tls.enabled needs tls.secretName"),
        ({"tls": {"clientCA": {"enabled": True}}}, "mutual TLS is TLS"),
        ({"store": {"credentials": {"accessKeyId": "AK"}}}, "needs both accessKeyId"),
    ],
    ids=["token", "signing-key", "store", "tls-secret", "client-ca-without-tls", "half-keys"],
)
def test_missing_values_fail_with_a_message(chart, change, message) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render(chart, merged(REQUIRED, change))


def test_existing_token_secret_needs_no_token(chart) -> None:
    values = merged(REQUIRED, {"auth": {"token": "", "existingSecret": "tok"}})
    assert mounted_file(render(chart, values), "/var/run/nbferry/token/token") == ("tok", "token")


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"replicas": "two"}, "/replicas"),
        ({"replicas": -1}, "/replicas"),
        ({"replica": 2}, "'replica' not allowed"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"image": {"digest": "sha256:0"}}, "'digest' not allowed"),
        ({"store": {"bucket": "b"}}, "'bucket' not allowed"),
        ({"store": {"credentials": {"sessionToken": "x"}}}, "'sessionToken' not allowed"),
        ({"auth": {"tokenFile": "x"}}, "'tokenFile' not allowed"),
        ({"tls": {"enabled": "yes"}}, "/tls/enabled"),
        ({"service": {"type": "ExternalName"}}, "/service/type"),
        ({"containerPort": 70000}, "/containerPort"),
        ({"terminationGracePeriodSeconds": 5}, "/terminationGracePeriodSeconds"),
        ({"gc": {"keepLast": "5"}}, "/gc/keepLast"),
        ({"gc": {"grace": "1 day"}}, "/gc/grace"),
        ({"gc": {"keep": 5}}, "'keep' not allowed"),
        ({"extraArgs": "--json"}, "/extraArgs"),
        ({"extraEnv": [{"value": "x"}]}, "/extraEnv/0"),
    ],
)
def test_schema_rejects_bad_values(chart, change, complaint) -> None:
    values = merged(REQUIRED, change)
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(complaint)):
        chart.validate_schema(values)
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(complaint)):
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


def test_schema_accepts_the_defaults_and_examples(chart) -> None:
    chart.validate_schema(chart.values)
    chart.validate_schema(merged(chart.values, EVERYTHING))


def test_notes_render(chart) -> None:
    notes = chart.render(values=EVERYTHING, name=RELEASE, namespace=NAMESPACE)[
        "nbferry/templates/NOTES.txt"
    ]
    assert f"nbferry migrate --to {FULLNAME}.{NAMESPACE}.svc:443" in notes
    assert "--tls-ca CA_FILE --tls-cert CERT --tls-key KEY" in notes
    assert "nbferry gc --keep-last 3 --keep-hourly 12 --keep-daily 30 --grace 30m" in notes


def cli_parse(args: list[str]):
    """Parse with nbferry's own argument parser (argparse exits on unknown flags)."""
    from nbferry.migrator.cli import build_parser

    return build_parser().parse_args(args)


@pytest.mark.parametrize("values", [REQUIRED, EVERYTHING], ids=["required", "everything"])
def test_serve_args_are_nbferry_flags(chart, values) -> None:
    parsed = cli_parse(container(render(chart, values))["args"])
    assert parsed.command == "serve"
    assert parsed.token_file == "/var/run/nbferry/token/token"
    assert parsed.store is None  # from $NBFERRY_STORE, set through the ConfigMap
    if values is EVERYTHING:
        assert parsed.grace == 295.0
        assert parsed.tls_client_ca == "/var/run/nbferry/client-ca/ca.crt"
        assert parsed.store_option == ["anon=false"]


def test_gc_args_are_nbferry_flags(chart) -> None:
    pytest.importorskip("nbferry.storage.gc", reason="`nbferry gc` is not in the CLI yet")
    args = container(render(chart, EVERYTHING), "CronJob")["args"]
    parsed = cli_parse(args)
    assert parsed.command == "gc"
    assert (parsed.keep_last, parsed.keep_hourly, parsed.keep_daily) == (3, 12, 30)
    assert parsed.grace == timedelta(minutes=30)


@pytest.mark.parametrize("grace", ["24h", "7d", "2w", "90s", "1.5h", "3600"])
def test_gc_grace_durations_the_cli_takes_pass_the_schema(chart, grace: str) -> None:
    chart.validate_schema(merged(REQUIRED, {"gc": {"grace": grace}}))


def test_long_release_names_fit_kubernetes_limits(chart) -> None:
    values = merged(REQUIRED, {"gc": {"enabled": True}})
    manifests = chart.render(values=values, name="r" * 53, namespace=NAMESPACE)
    for text in (t for p, t in manifests.items() if not p.endswith("NOTES.txt")):
        for obj in filter(None, yaml.safe_load_all(text)):
            limit = 52 if obj["kind"] == "CronJob" else 63
            name = obj["metadata"]["name"]
            assert len(name) <= limit, (obj["kind"], name)
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
