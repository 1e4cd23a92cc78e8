"""Every object ``cni-ipam render`` writes is valid against the Kubernetes OpenAPI schema of its kind.

Built-in kinds are checked by ``kubernetes-validate`` (the upstream schemas,
offline, strict: an unknown field is an error).  NetworkAttachmentDefinition
is a CRD, so it is checked against the CRD's own schema, vendored in
``tests/fixtures/deploy/nad-crd-schema.json`` (its ``_source`` says from
where), with its ``metadata`` checked as the ObjectMeta every object has.
"""

import json
import pathlib

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]' (kubernetes-validate)")

from cni_ipam.deploy.commands import render_text  # noqa: E402
from cni_ipam.deploy.manifests import Options  # noqa: E402

FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures" / "deploy"
EXAMPLES = ("shim-dhcp", "shim-whereabouts", "macvlan-static", "macvlan-dhcp", "mixed")
# The oldest Kubernetes we claim to work on, and the newest the validator knows.
VERSIONS = ("1.27", kubernetes_validate.latest_version())
NAD_SCHEMA = json.loads((FIXTURES / "nad-crd-schema.json").read_text())
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def objects(name, **options):
    text, _ = render_text(yaml.safe_load((FIXTURES / f"{name}.yaml").read_text()), Options(**options))
    return list(yaml.safe_load_all(text))


def check_nad(doc):
    import jsonschema

    jsonschema.validate(doc, NAD_SCHEMA)
    assert doc["apiVersion"] == "k8s.cni.cncf.io/v1"
    meta = doc["metadata"]
    assert set(meta) == {"name", "namespace"}
    for value in meta.values():  # what the API server requires of a CR's name and namespace
        assert len(value) <= 63 and jsonschema.Draft7Validator({"pattern": DNS_LABEL}).is_valid(value), value
    json.loads(doc["spec"]["config"])


def validate_object(doc, version):
    """One object against its kind's schema: the CRD's for a NAD, Kubernetes' (strict) for the rest.

    Shared with test_deploy_plain.py, which checks the shipped manifests the same way.
    """
    if doc["kind"] == "NetworkAttachmentDefinition":
        check_nad(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", EXAMPLES)
def test_rendered_objects_are_valid(name, version):
    kinds = set()
    for doc in objects(name) + objects(name, kubernetes_source=False, namespace="cni-ipam", agent=True):
        kinds.add(doc["kind"])
        validate_object(doc, version)
    assert "NetworkAttachmentDefinition" in kinds


def test_every_kind_rendered_is_covered():
    docs = objects("mixed", agent=True)
    assert "cni-ipam-agent" in {doc["metadata"]["name"] for doc in docs if doc["kind"] == "DaemonSet"}
    kinds = {doc["kind"] for doc in docs}
    assert kinds == {"NetworkAttachmentDefinition", "ConfigMap", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                     "DaemonSet"}


def test_the_validator_catches_a_misspelt_field():
    """The check has teeth: strict mode refuses a field the schema does not have."""
    daemon = next(d for d in objects("shim-dhcp") if d["kind"] == "DaemonSet")
    daemon["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][1]["mountPropogation"] = "HostToContainer"
    with pytest.raises(kubernetes_validate.ValidationError, match="mountPropogation"):
        kubernetes_validate.validate(daemon, VERSIONS[-1], strict=True)
