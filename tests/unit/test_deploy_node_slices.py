"""deploy/node-slices/: the controller's Deployment and exactly the verbs it sends (src/cni_ipam/nodeslices/controller.py).

Regenerate with ``cni-ipam render --plain --output-dir deploy`` (tests/unit/test_deploy_plain.py checks the files)."""

import pathlib

import yaml

DIRECTORY = pathlib.Path(__file__).parents[2] / "deploy" / "node-slices"


def documents() -> dict:
    return {(d["kind"], d["metadata"]["name"]): d for p in sorted(DIRECTORY.glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] != "Kustomization"}


def rules(role) -> dict:
    return {(group, resource): sorted(rule["verbs"])
            for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}


def test_the_rbac_grants_exactly_the_verbs_the_controller_sends():
    docs = documents()
    assert rules(docs["ClusterRole", "cni-ipam-node-slices"]) == {
        ("", "nodes"): ["list", "watch"], ("k8s.cni.cncf.io", "network-attachment-definitions"): ["list", "watch"]}
    assert rules(docs["Role", "cni-ipam-node-slices"]) == {
        ("whereabouts.cni.cncf.io", "nodeslicepools"): ["create", "list", "update", "watch"],
        ("whereabouts.cni.cncf.io", "ippools"): ["create", "list", "watch"],
        ("coordination.k8s.io", "leases"): ["create", "get", "update"]}
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        binding = docs[kind, "cni-ipam-node-slices"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cni-ipam-node-slices",
                                        "namespace": "cni-ipam"}]


def test_one_replica_runs_the_controller_in_the_store_namespace_under_its_account():
    deployment = documents()["Deployment", "cni-ipam-node-slices"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "cni-ipam-node-slices"
    assert documents()["ServiceAccount", "cni-ipam-node-slices"]["automountServiceAccountToken"] is True
    (container,) = pod["containers"]
    assert container["command"] == ["cni-ipam", "node-slices", "--namespace", "cni-ipam"]
    assert container["env"][0]["name"] == "POD_NAME"  # the identity in the Lease


def test_the_command_parses_what_the_deployment_runs():
    from cni_ipam.cli import build_parser

    command = documents()["Deployment", "cni-ipam-node-slices"]["spec"]["template"]["spec"]["containers"][0]["command"]
    args = build_parser().parse_args(command[1:])
    assert args.namespace == "cni-ipam" and args.lease_duration == 15 and args.max_slices_per_node == 2
