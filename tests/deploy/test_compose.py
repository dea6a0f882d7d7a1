"""docker-compose.yml: valid against the vendored Compose Specification schema, and wired the way
acefarm needs (images, settings, GPUs, profiles, volumes, start order)."""

from __future__ import annotations

import ast
import copy
import inspect
import json
import re
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy import composefile
from tests.deploy.envdocs import EXTERNAL_ENV, ROOT, parse_env_example, settings_adapter, settings_env_names

SCHEMA_FILE = ROOT / "tests" / "deploy" / "compose-spec.json"
ACEFARM_COMMANDS = {"gateway", "streams", "scheduler", "gpu-consumer", "trainer", "models"}


@cache
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def schema_errors(data: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(data)]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return composefile.load()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def is_acefarm(service: dict[str, Any]) -> bool:
    """A service that runs the acefarm image (built from this repository)."""
    return "build" in service


def active(services: dict[str, dict[str, Any]], *profiles: str) -> dict[str, dict[str, Any]]:
    """Services `docker compose --profile P ... up` starts: those without profiles plus the named ones."""
    return {n: s for n, s in services.items() if not s.get("profiles") or set(s["profiles"]) & set(profiles)}


# --- schema -------------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


def test_the_schema_rejects_a_broken_compose_file(compose: dict[str, Any]) -> None:
    """The validator is live: typical mistakes in this very file are caught."""
    broken = copy.deepcopy(compose)
    broken["services"]["gateway-1"]["ports"] = "8000:8000"  # must be a list
    broken["services"]["gpu0"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] = 0
    broken["services"]["streams"]["imgae"] = "typo"  # unknown key
    errors = schema_errors(broken)
    assert any(e.startswith("services/gateway-1/ports") for e in errors), errors
    assert any("device_ids" in e for e in errors), errors
    assert any("imgae" in e for e in errors), errors


# --- images ---------------------------------------------------------------------------------------


def test_every_service_has_an_image_and_pins_its_tag(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = composefile.interpolate(str(service.get("image", "")))
        assert image, f"{name}: no image"
        if is_acefarm(service):
            build = service["build"]
            context = ROOT / (build["context"] if isinstance(build, dict) else build)
            dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            assert (context / dockerfile).is_file(), f"{name}: build file {context / dockerfile} missing"
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag not in ("", "latest"), f"{name}: image {image!r} is not pinned"


def test_all_acefarm_services_run_one_image(services: dict[str, dict[str, Any]]) -> None:
    images = {composefile.interpolate(s["image"]) for s in services.values() if is_acefarm(s)}
    assert len(images) == 1, images


def test_acefarm_commands_exist(services: dict[str, dict[str, Any]]) -> None:
    """Each acefarm service runs an `acefarm` subcommand that acefarm/devtools/cli.py defines."""
    tree = ast.parse((ROOT / "acefarm" / "devtools" / "cli.py").read_text(encoding="utf-8"))
    defined: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "command":
                    explicit = [a.value for a in deco.args if isinstance(a, ast.Constant)]
                    defined.add(str(explicit[0]) if explicit else node.name.replace("_", "-"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_typer":
            defined.update(
                str(k.value.value) for k in node.keywords if k.arg == "name" and isinstance(k.value, ast.Constant)
            )
    assert defined >= ACEFARM_COMMANDS, f"acefarm/devtools/cli.py lacks {ACEFARM_COMMANDS - defined}"
    for name, service in services.items():
        if is_acefarm(service):
            cmd = composefile.command(service)
            assert cmd[:1] == ["acefarm"] and cmd[1] in defined, f"{name}: {cmd}"


# --- settings ---------------------------------------------------------------------------------------


def test_acefarm_environment_names_are_settings_and_values_valid(services: dict[str, dict[str, Any]]) -> None:
    names = settings_env_names()
    for name, service in services.items():
        if not is_acefarm(service):
            continue
        raw = composefile.raw_environment(service)
        for key, value in composefile.environment(service).items():
            assert key in names or key in EXTERNAL_ENV, f"{name}: {key} is neither a setting nor a known variable"
            if key in names and value is not None and not composefile.is_required(raw[key]):
                _, adapter = settings_adapter(key)
                adapter.validate_python(value)  # raises with the reason when the value is invalid


STORAGE_USERS = {"gateway", "gpu", "planner", "trainer", "lifecycle"}
"""The MinIO users deploy/minio/init.sh creates (besides the root user, which no acefarm service holds)."""


def test_acefarm_services_use_kafka_and_s3_of_this_stack(services: dict[str, dict[str, Any]]) -> None:
    """Every acefarm service reaches Kafka over SASL/SCRAM as a user of its own role, and S3 (if at all) as a
    MinIO user of its own role, never as MinIO's root user."""
    root = composefile.environment(services["minio"])["MINIO_ROOT_USER"]
    for name, service in services.items():
        if not is_acefarm(service):
            continue
        env = composefile.environment(service)
        assert env.get("KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092", name
        assert env.get("STORAGE_BACKEND") == "s3", name
        assert env.get("S3_ENDPOINT_URL") == "http://minio:9000", name
        assert env.get("KAFKA_SECURITY_PROTOCOL") == "SASL_PLAINTEXT", name
        assert env.get("KAFKA_SASL_MECHANISM") == "SCRAM-SHA-512", name
        role = composefile.command(service)[1]
        if role in ("gateway", "streams", "scheduler", "planner", "gpu-consumer", "trainer", "webhooks"):
            assert env.get("KAFKA_SASL_USERNAME") and env.get("KAFKA_SASL_PASSWORD") is not None, name
        if role in ("gateway", "planner", "gpu-consumer", "trainer", "storage"):
            assert env.get("AWS_ACCESS_KEY_ID") in STORAGE_USERS, name
            assert "AWS_SECRET_ACCESS_KEY" in env, name
        else:
            assert "AWS_ACCESS_KEY_ID" not in env, f"{name} needs no storage and gets no storage credentials"
        assert env.get("AWS_ACCESS_KEY_ID") != root, name
    bucket = composefile.environment(services["minio-init"])["BUCKET"]
    assert bucket == composefile.environment(services["gateway-1"])["STORAGE_BUCKET"]


def test_one_kafka_user_per_role_with_acls_and_minio_users_limited_to_prefixes(
    services: dict[str, dict[str, Any]],
) -> None:
    users_by_role: dict[str, set[str]] = {}
    for service in services.values():
        if is_acefarm(service) and (user := composefile.environment(service).get("KAFKA_SASL_USERNAME")):
            users_by_role.setdefault(composefile.command(service)[1], set()).add(user)
    assert all(len(users) == 1 for users in users_by_role.values()), users_by_role
    roles_of_user: dict[str, set[str]] = {}
    for role, users in users_by_role.items():
        for user in users:
            roles_of_user.setdefault(user, set()).add(role)
    assert all(len(roles) == 1 for roles in roles_of_user.values()), roles_of_user
    start = (ROOT / "deploy/kafka/start.sh").read_text(encoding="utf-8")
    kafka = composefile.environment(services["kafka"])
    for user in roles_of_user:
        assert f"SCRAM_{user.upper()}" in kafka, f"kafka gets no password for {user}"
        assert re.search(rf"^\s*(topics|acl) {user} (Read|Write)", start, re.M), f"no ACL grants {user} a topic"
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert "StandardAuthorizer" in (kafka["KAFKA_AUTHORIZER_CLASS_NAME"] or "")
    protocols = dict(item.split(":") for item in (kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] or "").split(","))
    for listener in (kafka["KAFKA_LISTENERS"] or "").split(","):
        label, _, address = listener.partition("://")
        assert protocols[label].startswith("SASL") or address.startswith("127.0.0.1:"), f"{label} is open: {address}"
    init = (ROOT / "deploy/minio/init.sh").read_text(encoding="utf-8")
    for user in STORAGE_USERS:
        assert f"mc admin user add local {user} " in init and f"policy {user} " in init, user
    assert "s3:*" not in init and '"Resource": ["arn:aws:s3:::$B/*"]' not in init


def test_no_broker_or_minio_port_is_published(services: dict[str, dict[str, Any]]) -> None:
    for name in ("kafka", "minio", "minio-init"):
        assert not services[name].get("ports"), f"{name} publishes {services[name]['ports']}"
    for name in ("prometheus", "grafana"):
        assert all(str(p).startswith("127.0.0.1:") for p in services[name].get("ports", [])), name


SECRET_NAME = re.compile(r"PASSWORD|SECRET")


def test_secrets_are_required_and_have_no_defaults(compose: dict[str, Any]) -> None:
    """Every password or secret the file interpolates is `${VAR:?...}`: compose refuses to start without it."""
    text = composefile.COMPOSE_FILE.read_text(encoding="utf-8")
    uses = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?", text)
    secrets = {name for name, _ in uses if SECRET_NAME.search(name)} | {"MINIO_ROOT_USER"}
    assert secrets >= {"MINIO_ROOT_PASSWORD", "KAFKA_GATEWAY_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
    for name, op in uses:
        if name in secrets:
            assert op == ":?", f"${{{name}}} must be required (${{{name}:?...}}), not {op or 'optional'}"
    assert "acefarm-dev-secret" not in text


def test_containers_are_locked_down(services: dict[str, dict[str, Any]]) -> None:
    """Every container drops all capabilities and cannot gain privileges; acefarm containers run read-only
    with tmpfs scratch."""
    for name, service in services.items():
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in (service.get("security_opt") or []), name
        if is_acefarm(service):
            assert service.get("read_only") is True and "/tmp" in service.get("tmpfs", []), name
            assert not service.get("cap_add"), name


def test_two_gateways_behind_the_proxy(services: dict[str, dict[str, Any]]) -> None:
    gateways = [n for n, s in services.items() if is_acefarm(s) and composefile.command(s)[1] == "gateway"]
    assert len(gateways) >= 2 and not any(services[g].get("ports") for g in gateways), gateways
    for name in gateways:
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"]), name
        assert composefile.environment(services[name]).get("LINK_SIGNING_SECRET") is not None  # shared by replicas
    proxy = services["proxy"]
    assert composefile.interpolate(proxy["image"]).startswith("nginx:")
    config = (ROOT / "deploy/nginx/acefarm.conf").read_text(encoding="utf-8")
    assert set(gateways) <= set(re.findall(r"server ([\w.-]+):8000", config)), "the proxy does not list every gateway"
    for setting in ("proxy_buffering off", "proxy_read_timeout 3600s", "proxy_next_upstream error"):
        assert setting in config, setting
    mounted = {str(v).split(":")[0] for v in proxy["volumes"]}
    assert {"./deploy/nginx/acefarm.conf", "./deploy/nginx/downloads.conf"} <= mounted


def test_every_interpolated_variable_is_in_env_example(compose: dict[str, Any]) -> None:
    documented = {e.name for e in parse_env_example((ROOT / ".env.example").read_text(encoding="utf-8"))}
    missing = composefile.variables(compose) - documented
    assert not missing, f".env.example does not document {sorted(missing)}"


# --- GPUs and profiles ---------------------------------------------------------------------------


def test_gpu_services_reserve_distinct_devices(services: dict[str, dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    consumers = 0
    for name, service in services.items():
        ids = composefile.gpu_device_ids(service)
        if composefile.command(service)[:2] == ["acefarm", "gpu-consumer"] and "cpu" not in service.get("profiles", []):
            consumers += 1
            assert len(ids) == 1, f"{name}: a GPU consumer reserves exactly one GPU, got {ids}"
            assert composefile.environment(service).get("DEVICE") in ("cuda", "cuda:0"), name
        for device in ids:
            assert device not in seen, f"GPU {device} reserved by both {seen[device]} and {name}"
            seen[device] = name
    assert consumers >= 2, "show at least two GPU consumers"


def test_worker_ids_are_unique(services: dict[str, dict[str, Any]]) -> None:
    ids = [composefile.environment(s).get("WORKER_ID") for s in services.values() if is_acefarm(s)]
    named = [i for i in ids if i]
    assert len(named) == len(set(named)), named


def test_no_gpu_is_needed_without_the_gpu_profiles(services: dict[str, dict[str, Any]]) -> None:
    for name, service in active(services, "cpu").items():
        assert not composefile.gpu_device_ids(service), f"{name} needs a GPU but runs in the cpu profile"


def test_cpu_profile_runs_the_pipeline_on_the_tiny_checkpoint(services: dict[str, dict[str, Any]]) -> None:
    cpu = active(services, "cpu")
    makers = {n: s for n, s in cpu.items() if composefile.command(s)[:3] == ["acefarm", "models", "make-tiny"]}
    assert len(makers) == 1, makers
    ((maker_name, maker),) = makers.items()
    tiny_dir = composefile.command(maker)[3]
    maker_volume = _volume_holding(maker, tiny_dir)
    assert maker_volume, f"{maker_name} writes {tiny_dir} outside any named volume"
    roles = {composefile.command(s)[1] for s in cpu.values() if is_acefarm(s)}
    assert {"gateway", "streams", "gpu-consumer", "trainer"} <= roles, roles
    for name, service in cpu.items():
        if composefile.command(service)[1:2] in (["gpu-consumer"], ["trainer"]):
            env = composefile.environment(service)
            assert env.get("DEVICE") == "cpu" and env.get("MODEL_PATH") == tiny_dir, name
            assert _volume_holding(service, tiny_dir) == maker_volume, f"{name} does not mount {maker_volume}"
            condition = (service.get("depends_on") or {}).get(maker_name, {}).get("condition")
            assert condition == "service_completed_successfully", f"{name} must wait for {maker_name}"


def _volume_holding(service: dict[str, Any], path: str) -> str | None:
    for mount in service.get("volumes") or []:
        source, _, rest = str(mount).partition(":")
        target = rest.split(":")[0]
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return source
    return None


# --- infrastructure ----------------------------------------------------------------------------------


def test_kafka_runs_kraft_single_node_with_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert composefile.interpolate(kafka["image"]).startswith("apache/kafka:")
    env = composefile.environment(kafka)
    assert set((env["KAFKA_PROCESS_ROLES"] or "").split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@localhost:9093"  # loopback only
    assert "healthcheck" in kafka and kafka["healthcheck"]["test"]


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    """depends_on names real services, waits for health only where a healthcheck exists, and every acefarm
    service waits for Kafka; long-running services restart, one-shots do not."""
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health, which has no healthcheck"
        one_shot = name in ("minio-init", "storage-init") or composefile.command(service)[1:2] == ["models"]
        assert service.get("restart") == ("no" if one_shot else "unless-stopped"), name
        if is_acefarm(service) and not one_shot:
            assert (service.get("depends_on") or {}).get("kafka", {}).get("condition") == "service_healthy", name


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for mount in service.get("volumes") or []:
            source = str(mount).split(":")[0]
            if not re.match(r"^[./~]", source):
                assert source in declared, f"{name} mounts undeclared volume {source}"


# --- metrics: Prometheus and Grafana ------------------------------------------------------------------


def scrape_targets() -> dict[str, str]:
    """host → job of every static target in deploy/prometheus/prometheus.yml."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    return {
        target.split(":")[0]: job["job_name"]
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }


def test_prometheus_scrapes_every_long_running_acefarm_service(services: dict[str, dict[str, Any]]) -> None:
    targets = scrape_targets()
    for name, service in services.items():
        if is_acefarm(service) and service.get("restart") != "no":
            assert name in targets, f"{name} is not scraped by deploy/prometheus/prometheus.yml"
    assert set(targets) <= set(services), f"scrape targets that are no service: {set(targets) - set(services)}"
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    gateway = next(j for j in config["scrape_configs"] if j["job_name"] == "gateway")
    assert gateway["static_configs"][0]["targets"] == ["gateway-1:8000", "gateway-2:8000"]  # /metrics on the API port
    env = services["streams"]["environment"]
    assert str(env["METRICS_PORT"]) == "9100" and env["METRICS_HOST"] == "0.0.0.0"


def test_prometheus_and_grafana_mount_the_provisioned_files(services: dict[str, dict[str, Any]]) -> None:
    for name in ("prometheus", "grafana"):
        for mount in services[name]["volumes"]:
            source = str(mount).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["uid"] == "prometheus"


def test_dashboard_queries_only_metrics_acefarm_exports() -> None:
    """Every metric name a panel queries is defined in acefarm/infra/metrics.py or gpu_consumer/gpu_metrics.py."""
    from prometheus_client import REGISTRY

    import acefarm.infra.metrics  # noqa: F401 - registers the metrics
    from gpu_consumer.gpu_metrics import CudaCollector

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exported = {f.name + end for f in REGISTRY.collect() if f.name.startswith("acefarm_") for end in suffixes[f.type]}
    gpu_source = inspect.getsource(CudaCollector)
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/acefarm.json").read_text(encoding="utf-8"))
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        for target in panel["targets"]:
            for name in re.findall(r"\bacefarm_[a-z_]+", target["expr"]):
                known = name in exported or f'"{name}"' in gpu_source
                assert known, f"panel {panel['title']!r} queries {name}, which acefarm does not export"
