"""Which liveness sources the command line picks, and the node name it judges for."""

from __future__ import annotations

import json

import pytest

from cni_ipam.cli import build_parser
from cni_ipam.reconciler import commands


def args_of(*argv):
    return build_parser().parse_args(["reconcile", *argv])


@pytest.fixture(autouse=True)
def outside_a_cluster(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("NODENAME", raising=False)
    monkeypatch.setattr(commands, "SERVICE_ACCOUNT", str(tmp_path / "no-service-account"))


def flat(tmp_path, **keys) -> str:
    path = tmp_path / "whereabouts.conf"
    path.write_text(json.dumps(keys))
    return str(path)


def test_auto_is_netns_outside_a_cluster(tmp_path):
    assert commands.chosen_sources(args_of("--config", flat(tmp_path))) == ["netns"]


def test_auto_adds_kubernetes_inside_a_pod(tmp_path, monkeypatch):
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("t")
    monkeypatch.setattr(commands, "SERVICE_ACCOUNT", str(account))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert commands.chosen_sources(args_of("--config", flat(tmp_path))) == ["netns", "kubernetes"]


def test_auto_adds_kubernetes_when_the_flat_file_names_an_existing_kubeconfig(tmp_path):
    kubeconfig = tmp_path / "whereabouts.kubeconfig"
    config = flat(tmp_path, kubernetes={"kubeconfig": str(kubeconfig)})
    assert commands.chosen_sources(args_of("--config", config)) == ["netns"]  # not there (yet)
    kubeconfig.write_text("apiVersion: v1\n")
    assert commands.chosen_sources(args_of("--config", config)) == ["netns", "kubernetes"]


def test_files_imply_their_sources_and_explicit_choices_replace_auto(tmp_path):
    config = flat(tmp_path)
    assert commands.chosen_sources(args_of("--config", config, "--valid-attachments", "v.json")) == [
        "netns", "attachments"]
    assert commands.chosen_sources(args_of("--config", config, "--source", "kubernetes", "--kubeconfig", "k")) == [
        "kubernetes"]
    assert commands.chosen_sources(args_of("--config", config, "--source", "attachments", "--source", "netns",
                                           "--source", "netns")) == ["attachments", "netns"]


def test_node_name_from_the_option_then_nodename_then_the_file_then_the_host(monkeypatch, tmp_path):
    import os

    config = flat(tmp_path)
    assert commands.node_name(args_of("--config", config, "--node", "n1")) == "n1"
    monkeypatch.setenv("NODENAME", "n2")
    assert commands.node_name(args_of("--config", config)) == "n2"
    monkeypatch.delenv("NODENAME")
    assert commands.node_name(args_of("--config", config)) == os.uname().nodename
    # the nodename file beside the flat file, as upstream's installer and OpenShift's CNO write it,
    # which the plugin reads too (cni_ipam.plugins.whereabouts._node_name)
    (tmp_path / "nodename").write_text("worker-3\n")
    assert commands.node_name(args_of("--config", config)) == "worker-3"
    monkeypatch.setenv("NODENAME", "n2")
    assert commands.node_name(args_of("--config", config)) == "n2"


def test_the_rendered_reconciler_gets_its_node_name_from_the_downward_api():
    from cni_ipam.deploy.manifests import Options, reconciler_objects

    for config in (None, {"datastore": "kubernetes"}):
        daemon_set = next(o for o in reconciler_objects(Options(), config) if o["kind"] == "DaemonSet")
        container, = daemon_set["spec"]["template"]["spec"]["containers"]
        assert {"name": "NODENAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}} \
            in container["env"]


def test_negative_grace_is_refused(capsys):
    with pytest.raises(SystemExit):
        args_of("--grace", "-1")
    assert "must not be negative" in capsys.readouterr().err
