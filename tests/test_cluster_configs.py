"""Every `ray up` config in cluster/: valid against Ray's schema, secure, pinned, free of credentials."""
from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted([*(REPO / "cluster").glob("*.yaml"), *(REPO / "cluster").glob("*.yml")])
WORLD = ("0.0.0.0", "::/0")
DOC_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
PIN = re.compile(r'"deepemocluster-tuner(\[\w+\])? @ git\+https://\S+@([0-9a-f]{40}|REPLACE_COMMIT_SHA)"')
SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key": re.compile(r"aws_secret_access_key\s*[:=]\s*\S+", re.I),
    "private key block": re.compile(r"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----"),
    "GCP service-account key": re.compile(r'"private_key"\s*:'),
    "password": re.compile(r"\bpassw(or)?d\s*[:=]\s*\S+", re.I),
    "Ray token value": re.compile(r"RAY_AUTH_TOKEN\s*[:=]\s*['\"]?[A-Za-z0-9]{16,}"),
}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def prepared(config: dict) -> dict:
    """The config as `ray up` sees it: Ray's defaults filled in, setup commands merged."""
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(copy.deepcopy(config))


def strings(node) -> list[str]:
    """Every string (keys and values) anywhere in a parsed YAML tree."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings(k) + strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def ray_start_commands(config: dict) -> list[str]:
    cmds = config.get("head_start_ray_commands", []) + config.get("worker_start_ray_commands", [])
    return [c for c in cmds if re.search(r"\bray start\b", c)]


def worker_setups(config: dict) -> dict[str, list[str]]:
    """Effective setup commands per worker node type (a node type's own list replaces the global one)."""
    types = config["available_node_types"]
    return {name: t.get("worker_setup_commands", config["worker_setup_commands"])
            for name, t in types.items() if name != config["head_node_type"]}


def violations(config: dict) -> list[str]:
    """Security problems of one (prepared) cluster config; empty when it is fine."""
    found = []
    for s in strings(config):
        if any(w in s for w in WORLD):
            found.append(f"opens to the world: {s!r}")
        if re.search(r"--dashboard-host[= ](?!127\.0\.0\.1|localhost)", s):
            found.append(f"dashboard bound beyond localhost: {s!r}")
        if re.search(r"--ray-client-server-port|--dashboard-port", s):
            found.append(f"extra Ray endpoint configured: {s!r}")
    head = [c for c in ray_start_commands(config) if "--head" in c]
    if len(head) != 1 or "--dashboard-host=127.0.0.1" not in head[0]:
        found.append("the head's `ray start` must bind the dashboard to 127.0.0.1 explicitly")
    for cmd in ray_start_commands(config):
        if "RAY_AUTH_MODE=token" not in cmd:
            found.append(f"`ray start` without RAY_AUTH_MODE=token: {cmd!r}")
    if not any("export RAY_AUTH_MODE=token" in c for c in config.get("setup_commands", [])):
        found.append("setup_commands must export RAY_AUTH_MODE=token for drivers (ray exec / ray job)")
    mounts = config.get("file_mounts", {})
    token_src = mounts.get("~/.ray/auth_token")
    if token_src is None:
        found.append("file_mounts must copy ~/.ray/auth_token to the nodes")
    elif not token_src.startswith(("~", "/")) or \
            Path(os.path.expanduser(token_src)).resolve().is_relative_to(REPO.resolve()):
        found.append(f"auth token copied from {token_src!r}: must be a path outside the repository")
    provider = config["provider"]
    if provider["type"] == "aws":
        for rule in provider.get("security_group", {}).get("IpPermissions", []):
            if (rule.get("FromPort"), rule.get("ToPort")) != (22, 22):
                found.append(f"AWS rule opens more than SSH: {rule}")
        for name, node_type in config["available_node_types"].items():
            if not node_type["node_config"].get("SecurityGroupIds"):
                found.append(f"AWS node type {name}: no SecurityGroupIds, Ray would create a group "
                             "with SSH open to 0.0.0.0/0")
    if provider["type"] == "gcp":
        for name, node_type in config["available_node_types"].items():
            nics = node_type["node_config"].get("networkInterfaces") or [{}]
            for nic in nics:
                where = nic.get("subnetwork", "") + nic.get("network", "")
                if not where or re.search(r"(^|/)default$", where):
                    found.append(f"GCP node type {name}: must use its own network, not the default one "
                                 "(whose rules open SSH/RDP to 0.0.0.0/0)")
    if provider["type"] == "local":
        for ip in [provider["head_ip"], *provider["worker_ips"]]:
            if not any(ipaddress.ip_address(ip) in net for net in DOC_NETS):
                found.append(f"on-prem address {ip} is not a documentation placeholder (RFC 5737)")
    return found


def secrets_in(text: str) -> list[str]:
    return [name for name, pattern in SECRET_PATTERNS.items() if pattern.search(text)]


# ---- the shipped configs -----------------------------------------------------------------------

def test_the_three_configs_exist():
    assert {p.name for p in CONFIGS} >= {"aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_valid_against_rays_schema(path):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = load(path)
    jsonschema.validate(config, schema)
    validate_config(prepared(config))  # Ray's own checks after its defaults are filled in


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_secure(path):
    config = load(path)
    assert violations(config) == []
    assert violations(prepared(config)) == []  # Ray's defaults must not bring anything back


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_installs_a_pinned_revision_with_one_faiss_build_per_node_type(path):
    config = prepared(load(path))
    head = " ".join(config["head_setup_commands"])
    assert [m.group(1) for m in PIN.finditer(head)] == ["[cpu]"]  # the head: faiss-cpu
    for name, cmds in worker_setups(config).items():
        joined = " ".join(cmds)
        assert [m.group(1) for m in PIN.finditer(joined)] == ["[gpu]"], name  # GPU workers: faiss-gpu
        assert "python3 -m venv ~/tuner-venv" in joined, name  # setup_commands not dropped
        assert "export RAY_AUTH_MODE=token" in joined, name
        assert "faiss.get_num_gpus() > 0" in joined, name  # setup fails when faiss sees no GPU
    every = " ".join(strings(config))
    assert "uninstall" not in every and "faiss-cpu" not in every and "--force-reinstall" not in every


def test_extras_give_one_faiss_build_each():
    """pyproject: no faiss in the base dependencies; `cpu` brings faiss-cpu, `gpu` a GPU build, never both."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("faiss")]
    extras = project["optional-dependencies"]
    assert [d for d in extras["cpu"] if "faiss" in d] == ["faiss-cpu>=1.9"]
    assert [d.split(">")[0] for d in extras["gpu"] if "faiss" in d] == ["faiss-gpu"]


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_cloud_configs_offer_1_and_4_gpu_workers_on_demand_and_spot(name):
    config = load(REPO / "cluster" / name)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU", 0) == 0
    kinds = set()
    for type_name, node_type in config["available_node_types"].items():
        if type_name == config["head_node_type"]:
            continue
        nc = node_type["node_config"]
        spot = (nc.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
                or nc.get("scheduling", {}).get("provisioningModel") == "SPOT")
        kinds.add((node_type["resources"]["GPU"], spot))
        assert node_type["min_workers"] == 0  # autoscaling from zero
    assert kinds == {(1, False), (1, True), (4, False), (4, True)}


def test_no_credentials_in_cluster_configs_and_docs():
    files = [*CONFIGS, REPO / "cluster" / "README.md", REPO / "docs" / "cluster.md", REPO / "docs" / "scaling.md"]
    found = {str(p.relative_to(REPO)): secrets_in(p.read_text()) for p in files if p.exists()}
    assert {k: v for k, v in found.items() if v} == {}


def test_no_keys_anywhere_in_the_repository():
    """High-confidence patterns (AWS key ids, private key blocks) over every text file of the project."""
    bad = {}
    for path in REPO.rglob("*"):
        parts = path.relative_to(REPO).parts
        if not path.is_file() or parts[0] in (".venv", ".git") or "__pycache__" in parts \
                or path.suffix not in (".py", ".md", ".yaml", ".yml", ".toml", ".json", ".txt", ".cfg", ".sh", ""):
            continue
        if path.stat().st_size > 2_000_000:
            continue
        text = path.read_text(errors="ignore")
        hits = [n for n in ("AWS access key id", "private key block", "GCP service-account key")
                if SECRET_PATTERNS[n].search(text)]
        if hits:
            bad[str(path.relative_to(REPO))] = hits
    assert bad == {}


# ---- the checks themselves catch violations ---------------------------------------------------

def mutate(name: str, change) -> list[str]:
    config = load(REPO / "cluster" / name)
    change(config)
    return violations(config)


def _set_head(config, old, new):
    config["head_start_ray_commands"] = [c.replace(old, new) for c in config["head_start_ray_commands"]]


@pytest.mark.parametrize("change, expected", [
    (lambda c: _set_head(c, "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"), "dashboard"),
    (lambda c: _set_head(c, "--dashboard-host=127.0.0.1", ""), "127.0.0.1 explicitly"),
    (lambda c: _set_head(c, "RAY_AUTH_MODE=token ", ""), "without RAY_AUTH_MODE=token"),
    (lambda c: c.update(setup_commands=[]), "export RAY_AUTH_MODE"),
    (lambda c: c["file_mounts"].update({"~/.ray/auth_token": "cluster/auth_token"}), "outside the repository"),
    (lambda c: c["file_mounts"].pop("~/.ray/auth_token"), "must copy ~/.ray/auth_token"),
    (lambda c: c["provider"].update(security_group={"IpPermissions": [
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "198.51.100.0/24"}]}]}),
     "more than SSH"),
    (lambda c: c["provider"].update(security_group={"IpPermissions": [
        {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}), "world"),
    (lambda c: c["available_node_types"]["gpu1"]["node_config"].pop("SecurityGroupIds"), "SecurityGroupIds"),
    (lambda c: c["worker_start_ray_commands"].append("ray start --address=x:6379 --ray-client-server-port=10001"),
     "extra Ray endpoint"),
])
def test_checker_catches_aws_violations(change, expected):
    assert any(expected in v for v in mutate("aws-gpu.yaml", change))


def test_checker_catches_gcp_default_network_and_real_onprem_addresses():
    def default_net(c):
        c["available_node_types"]["gpu4"]["node_config"]["networkInterfaces"] = [
            {"subnetwork": "projects/p/regions/us-central1/subnetworks/default"}]
    assert any("default one" in v for v in mutate("gcp-gpu.yaml", default_net))
    assert any("not a documentation placeholder" in v
               for v in mutate("onprem.yaml", lambda c: c["provider"].update(head_ip="10.1.2.3")))


def test_secret_patterns_catch_credentials():
    fake_key_id = "AKIA" + "ABCDEFGHIJKLMNOP"
    assert secrets_in(f"aws_access_key_id = {fake_key_id}") == ["AWS access key id"]
    assert "private key block" in secrets_in("-----BEGIN " + "OPENSSH PRIVATE KEY-----\nxyz")
    assert "password" in secrets_in("db:\n  password: hunter2")
    assert "Ray token value" in secrets_in("RAY_AUTH_TOKEN=" + "a1b2c3d4" * 4)
    assert secrets_in(load(REPO / "cluster" / "aws-gpu.yaml").__repr__()) == []
