"""The plain manifest set in ``deploy/``: generated, complete, valid, and what our plugins accept.

``deploy/`` is written by ``cni-ipam render --plain --output-dir deploy``; after
a deliberate change to src/cni_ipam/deploy/, run that and read the diff.
"""

import json
import pathlib
import shutil
import subprocess

import pytest
import yaml

from cni_ipam.cli import main
from cni_ipam.deploy.networks import RenderError, check_ipam
from cni_ipam.deploy.plain import NAMESPACE, plain_files, plain_options

ROOT = pathlib.Path(__file__).parent.parent.parent
DEPLOY = ROOT / "deploy"
REGENERATE = "run: cni-ipam render --plain --output-dir deploy (then read the diff)"


def shipped_files() -> dict:
    return {str(p.relative_to(DEPLOY)): p.read_text() for p in sorted(DEPLOY.rglob("*")) if p.is_file()}


def manifests():
    """Every shipped YAML file but the kustomizations, as (path, documents)."""
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            yield path, [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def shipped_documents() -> list:
    return [(path, doc) for path, docs in manifests() for doc in docs]


# --- one definition: deploy/ is what the code writes ---------------------------------------------------

def test_deploy_is_byte_identical_to_what_render_plain_writes():
    expected, shipped = plain_files(plain_options()), shipped_files()
    assert sorted(shipped) == sorted(expected), REGENERATE
    for name, text in expected.items():
        assert shipped[name] == text, f"deploy/{name} differs; {REGENERATE}"


def test_the_command_writes_the_same_files(tmp_path, capsys):
    assert main(["render", "--plain", "--output-dir", str(tmp_path)]) == 0
    written = {str(p.relative_to(tmp_path)): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == shipped_files()
    assert capsys.readouterr().out.count("wrote ") == len(written)


@pytest.mark.parametrize("argv", [["render", "--plain", "x.yaml", "--output-dir", "d"],
                                  ["render", "--plain"],
                                  ["render", "--plain", "--output-file", "x", "--output-dir", "d"],
                                  ["render", "--plain", "-o", "json", "--output-dir", "d"],
                                  ["render", "--output-dir", "d"]])
def test_plain_flags_are_not_mixed_with_a_network_resources(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert "--output-dir" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_plain_no_agent_leaves_out_the_agent_and_the_native_forwarder(tmp_path):
    """The agent is part of the base set by default, as with render; --no-agent writes a set without it."""
    assert main(["render", "--plain", "--no-agent", "--output-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "agent.yaml").exists()
    assert "agent.yaml" not in yaml.safe_load((tmp_path / "kustomization.yaml").read_text())["resources"]
    installer = next(d for d in yaml.safe_load_all((tmp_path / "installer.yaml").read_text())
                     if d and d["kind"] == "DaemonSet")
    assert "--native" not in installer["spec"]["template"]["spec"]["containers"][0]["command"]
    assert main(["render", "--plain", "--agent", "--output-dir", str(tmp_path / "with")]) == 0  # the default
    assert (tmp_path / "with" / "agent.yaml").read_text() == (DEPLOY / "agent.yaml").read_text()


# --- kustomize: every kustomization lists exactly its directory's files ---------------------------------

def kustomizations():
    return sorted(DEPLOY.rglob("kustomization.yaml"))


def test_every_directory_is_a_kustomization_listing_exactly_its_files():
    directories = {p.parent for p in DEPLOY.rglob("*.yaml")}
    assert {k.parent for k in kustomizations()} == directories
    for kustomization in kustomizations():
        listed = yaml.safe_load(kustomization.read_text())["resources"]
        here = sorted(p.name for p in kustomization.parent.glob("*.yaml") if p.name != "kustomization.yaml")
        assert sorted(listed) == here, kustomization
        assert all((kustomization.parent / name).is_file() for name in listed)


def built(directory) -> list:
    kubectl = shutil.which("kubectl")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return list(yaml.safe_load_all(out.stdout))


def key(doc):
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl (with its built-in kustomize) is not installed")
@pytest.mark.parametrize("kustomization", kustomizations(), ids=lambda p: str(p.parent.relative_to(DEPLOY)) or ".")
def test_kustomize_builds_each_directory_unchanged(kustomization):
    """kustomize accepts the layout, and adds or changes nothing: what it builds is what the files hold."""
    files = [doc for path, doc in shipped_documents() if path.parent == kustomization.parent]
    assert sorted(built(kustomization.parent), key=key) == sorted(files, key=key)


# --- every shipped manifest valid, as test_deploy_schema checks the rendered ones -----------------------

def _validation():
    return pytest.importorskip("test_deploy_schema", reason="pip install -e '.[test]' (kubernetes-validate)")


DOCUMENTS = shipped_documents()


@pytest.mark.parametrize("path,doc", DOCUMENTS, ids=[f"{p.relative_to(DEPLOY)}:{d['kind']}" for p, d in DOCUMENTS])
def test_every_shipped_manifest_is_valid(path, doc):
    schema = _validation()
    for version in schema.VERSIONS:
        schema.validate_object(doc, version)


def test_the_kinds_shipped():
    assert {d["kind"] for _, d in DOCUMENTS} == {
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Secret",
        "NetworkAttachmentDefinition", "CustomResourceDefinition", "Role", "RoleBinding", "Deployment"}


# --- every NAD accepted by our plugin's parser (render's check), with the flat file the nodes get --------

def secret_beside(path):
    """The etcd Secret in the same directory as ``path``, if there is one."""
    secret = path.parent / "etcd-secret.yaml"
    return next(d for d in yaml.safe_load_all(secret.read_text()) if d) if secret.exists() else None


def flat_file_beside(path):
    """The whereabouts.conf that a Secret in the same directory puts on every node, if there is one."""
    secret = secret_beside(path)
    return json.loads(secret["stringData"]["whereabouts.conf"]) if secret else None


NADS = [(p, d) for p, d in DOCUMENTS if d["kind"] == "NetworkAttachmentDefinition"]


@pytest.mark.parametrize("path,doc", NADS, ids=[d["metadata"]["name"] for _, d in NADS])
def test_every_shipped_nad_is_accepted_by_the_plugin(path, doc):
    config = json.loads(doc["spec"]["config"])
    types, notes = check_ipam(doc["metadata"]["name"], config, flat_file_beside(path))
    assert types & {"static", "dhcp", "whereabouts"} and notes == []


def test_the_etcd_example_needs_the_secrets_flat_file():
    """The example names its datastore, so a node without the flat file refuses instead of allocating alone."""
    path, doc = next((p, d) for p, d in NADS if d["metadata"]["name"] == "whereabouts-etcd")
    config = json.loads(doc["spec"]["config"])
    assert config["ipam"]["datastore"] == "etcd"
    with pytest.raises(RenderError, match="needs ipam.etcd_host or ipam.etcd_endpoints"):
        check_ipam("whereabouts-etcd", config)
    flat, secret = flat_file_beside(path), secret_beside(path)
    for key in ("etcd_ca_cert_file", "etcd_cert_file", "etcd_key_file"):
        # The TLS files are keys of the same Secret, copied beside the flat file.
        directory, name = flat[key].rsplit("/", 1)
        assert directory == "/etc/cni/net.d/whereabouts.d" and name in secret["stringData"]


# --- what the plain set deploys ----------------------------------------------------------------------------

def daemon_sets() -> dict:
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for _, d in DOCUMENTS if d["kind"] == "DaemonSet"}


def test_one_installer_installs_the_plugins_and_the_others_do_not():
    pods = daemon_sets()
    assert sorted(pods) == ["cni-ipam-agent", "cni-ipam-installer", "dhcp-daemon", "whereabouts-reconciler"]
    installer = pods.pop("cni-ipam-installer")
    assert installer["containers"][0]["command"] == [
        "cni-ipam", "install", "--cni-bin-dir", "/host/opt/cni/bin", "--runtime-dir", "/host/opt/cni-ipam",
        "--host-root", "/host", "--native", "--keep", "2"]
    assert installer["containers"][1]["command"][:2] == ["cni-ipam", "sync-files"]
    for name, pod in pods.items():
        assert "initContainers" not in pod, name
        assert not {"cni-bin-dir", "runtime-dir"} & {v["name"] for v in pod["volumes"]}, name


def test_installer_copies_the_optional_etcd_secret_to_the_flat_file_dir():
    pod = daemon_sets()["cni-ipam-installer"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["etcd-secret"]["secret"] == {"secretName": "cni-ipam-etcd", "optional": True, "defaultMode": 0o400}
    assert volumes["flat-file-dir"]["hostPath"]["path"] == "/etc/cni/net.d/whereabouts.d"
    command = pod["containers"][1]["command"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][1]["volumeMounts"]}
    assert command[command.index("--from") + 1] == mounts["etcd-secret"]
    assert command[command.index("--to") + 1] == mounts["flat-file-dir"] == "/host/etc/cni/net.d/whereabouts.d"


def schedule_config_map():
    return next(d for _, d in DOCUMENTS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "whereabouts-config")


def test_everything_in_the_cni_ipam_namespace_with_the_schedule_config_map():
    for path, doc in DOCUMENTS:
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "NetworkAttachmentDefinition",
                               "CustomResourceDefinition"):
            assert doc["metadata"]["namespace"] == NAMESPACE, path
    config_map = schedule_config_map()
    assert (config_map["metadata"]["name"], config_map["data"]) == (
        "whereabouts-config", {"reconciler_cron_expression": "30 4 * * *"})
    namespace = next(d for _, d in DOCUMENTS if d["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_the_reconciler_schedule_is_one_the_reconciler_accepts():
    from cni_ipam.reconciler.cron import parse

    config_map = schedule_config_map()
    parse(config_map["data"]["reconciler_cron_expression"])


# --- the Kubernetes store: opt-in, CRDs as upstream ships them, exactly the verbs used ------------------------

STORE = DEPLOY / "kubernetes-store"


def store_documents() -> dict:
    return {(d["kind"], d["metadata"]["name"]): d for p, d in DOCUMENTS if p.parent == STORE}


def test_the_store_directory_holds_upstreams_crds_unchanged():
    from cni_ipam.deploy.kubernetes_store import CRD_DIR

    vendored = [d for p in sorted(pathlib.Path(CRD_DIR).glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    shipped = [d for (kind, _), d in store_documents().items() if kind == "CustomResourceDefinition"]
    key = lambda d: d["metadata"]["name"]  # noqa: E731
    assert sorted(shipped, key=key) == sorted(vendored, key=key)
    assert sorted(map(key, shipped)) == ["ippools.whereabouts.cni.cncf.io", "nodeslicepools.whereabouts.cni.cncf.io",
                                         "overlappingrangeipreservations.whereabouts.cni.cncf.io"]


def rules(role) -> dict:
    return {(group, resource): sorted(rule["verbs"])
            for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}


def test_the_store_rbac_grants_exactly_the_verbs_used():
    docs = store_documents()
    objects = sorted(["create", "delete", "get", "list", "patch", "watch"])  # never update: the store only patches
    assert rules(docs["Role", "cni-ipam-kubernetes-store"]) == {
        ("whereabouts.cni.cncf.io", "ippools"): objects,
        ("whereabouts.cni.cncf.io", "overlappingrangeipreservations"): objects,
        ("whereabouts.cni.cncf.io", "nodeslicepools"): ["get", "list", "watch"]}
    assert docs["Role", "cni-ipam-kubernetes-store"]["metadata"]["namespace"] == NAMESPACE
    # Plugins, agent and reconciler all open the store through the node's kubeconfig: the installer's token.
    role_subjects = {s["name"] for s in docs["RoleBinding", "cni-ipam-kubernetes-store"]["subjects"]}
    assert role_subjects == {"cni-ipam-installer"}
    assert {kind for kind, _ in docs} == {"CustomResourceDefinition", "Role", "RoleBinding", "ConfigMap"}


def test_the_reconciler_rbac_grants_exactly_the_verbs_it_sends():
    """pods get, list (its kubernetes liveness source), watch (its pod watch); events create (an Event per
    address the watch frees or fails to free); tests/integration/test_deploy_rbac.py runs it under these."""
    role = next(d for p, d in DOCUMENTS if p == DEPLOY / "reconciler.yaml" and d["kind"] == "ClusterRole")
    assert rules(role) == {("", "pods"): ["get", "list", "watch"], ("", "events"): ["create"]}
    binding = next(d for p, d in DOCUMENTS if p == DEPLOY / "reconciler.yaml" and d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "whereabouts-reconciler",
                                    "namespace": NAMESPACE}]


def test_the_installer_writes_the_kubeconfig_only_once_the_store_config_map_exists():
    """The installer's node-kubeconfig container reads the opt-in ConfigMap's flat file, whose kubeconfig is the
    file that container writes, on the host, in the directory the reconciler and agent mount."""
    pod = daemon_sets()["cni-ipam-installer"]
    container = next(c for c in pod["containers"] if c["name"] == "node-kubeconfig")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    command = container["command"]
    config_map = store_documents()["ConfigMap", "cni-ipam-kubernetes-store"]
    assert volumes["kubernetes-store"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert volumes["kubernetes-store"]["configMap"]["optional"] is True
    flat = json.loads(config_map["data"]["whereabouts.conf"])
    assert flat == {"datastore": "kubernetes",
                    "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"},
                    "configuration_path": "/etc/cni/net.d/whereabouts.d"}
    assert command[command.index("--flat-file") + 1] == mounts["kubernetes-store"] + "/whereabouts.conf"
    assert command[command.index("--to") + 1] == mounts["flat-file-dir"] == "/host" + flat["configuration_path"]
    # Only this container has a token, and it is the installer's own service account's.
    assert mounts["service-account"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    sources = volumes["service-account"]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    for other in pod["containers"]:
        if other is not container:
            assert "service-account" not in {m["name"] for m in other["volumeMounts"]}, other["name"]
    installer_account = next(d for _, d in DOCUMENTS
                             if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "cni-ipam-installer")
    assert installer_account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "cni-ipam-installer"

