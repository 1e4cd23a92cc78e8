"""The resources the test server serves, where kube-apiserver keeps each in etcd, and their validation.

Storage paths follow kube-apiserver: built-in resources under
``/registry/<resource>`` (nodes under ``/registry/minions``:
``SpecialDefaultResourcePrefixes`` in kubernetes/kubernetes
pkg/kubeapiserver/default_storage_factory_builder.go), custom resources
under ``/registry/<group>/<resource>`` (apiextensions-apiserver's
customresource storage), then ``<namespace>/<name>`` or ``<name>``.

Custom objects are pruned of unknown fields and validated against the
``openAPIV3Schema`` of the CRDs vendored in ``cni_ipam/deploy/crds``, as
apiextensions-apiserver does (pkg/apiserver/schema/pruning, pkg/apiserver/validation).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import cni_ipam.deploy

from . import status

WHEREABOUTS = "whereabouts.cni.cncf.io"
CRD_DIR = os.path.join(os.path.dirname(cni_ipam.deploy.__file__), "crds")
COMMON_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    name: str  # plural, as in the URL
    kind: str
    namespaced: bool
    storage: str  # path under /registry/
    fields: tuple = COMMON_FIELDS  # field selector labels this resource supports
    schema: dict = field(default=None, compare=False, hash=False)  # openAPIV3Schema of a custom resource
    subresources: tuple = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def custom(self) -> bool:
        return self.schema is not None


def _crd(plural: str) -> dict:
    import yaml

    with open(os.path.join(CRD_DIR, f"{WHEREABOUTS}_{plural}.yaml")) as stream:
        return yaml.safe_load(stream)


def _custom(plural: str) -> Resource:
    crd = _crd(plural)["spec"]
    version = crd["versions"][0]
    return Resource(crd["group"], version["name"], plural, crd["names"]["kind"], crd["scope"] == "Namespaced",
                    f"{crd['group']}/{plural}", schema=version["schema"]["openAPIV3Schema"])


# The NetworkAttachmentDefinition's schema, from k8snetworkplumbingwg/network-attachment-definition-client
# artifacts/networks-crd.yaml @ 6fd0897fba5313b98cf5f556376813b843518632 (descriptions left out).
NAD_SCHEMA = {"type": "object", "required": ["spec"], "properties": {
    "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
    "spec": {"type": "object", "required": ["config"], "properties": {"config": {"type": "string"}}},
    "status": {"type": "object", "properties": {"state": {"type": "string"}, "observation": {"type": "string"}}}}}


def all_resources() -> list:
    """Every served resource (pods' field labels: kubernetes/kubernetes pkg/registry/core/pod/strategy.go)."""
    return [
        _custom("ippools"), _custom("overlappingrangeipreservations"), _custom("nodeslicepools"),
        Resource("", "v1", "pods", "Pod", True, "pods",
                 COMMON_FIELDS + ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                                  "spec.serviceAccountName", "status.phase", "status.podIP", "status.nominatedNodeName"),
                 subresources=("status",)),
        Resource("", "v1", "nodes", "Node", False, "minions", COMMON_FIELDS + ("spec.unschedulable",),
                 subresources=("status",)),
        Resource("", "v1", "events", "Event", True, "events",
                 COMMON_FIELDS + ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                                  "involvedObject.uid", "reason", "type", "source")),
        Resource("coordination.k8s.io", "v1", "leases", "Lease", True, "leases"),
        Resource("k8s.cni.cncf.io", "v1", "network-attachment-definitions", "NetworkAttachmentDefinition", True,
                 "k8s.cni.cncf.io/network-attachment-definitions", schema=NAD_SCHEMA),
    ]


# -- validation --------------------------------------------------------------

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SUBDOMAIN_HELP = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                   "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


def _path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def prune(value, schema: dict):
    """Drop the fields the schema does not name, as kube-apiserver does for structural CRD schemas."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        if properties is not None:
            return {k: prune(v, properties[k]) for k, v in value.items() if k in properties}
        if isinstance(extra, dict):
            return {k: prune(v, extra) for k, v in value.items()}
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"]) for item in value]
    return value


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def schema_causes(obj: dict, schema: dict) -> list:
    """``(type, field, message)`` for every schema violation, with kube-apiserver's wording."""
    import jsonschema

    causes = []
    for error in sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.absolute_path)):
        where = _path(error.absolute_path)
        if error.validator == "required":
            missing = error.message.split("'")[1]
            causes.append(("FieldValueRequired", f"{where}.{missing}" if where else missing, "Required value"))
        elif error.validator == "type":
            actual = _json_type(error.instance)
            causes.append(("FieldValueTypeInvalid", where, f'Invalid value: "{actual}": {where} in body must be of '
                                                           f'type {error.validator_value}: "{actual}"'))
        elif error.validator == "enum":
            choices = ", ".join(f'"{c}"' for c in error.validator_value)
            causes.append(("FieldValueNotSupported", where,
                           f'Unsupported value: "{error.instance}": supported values: {choices}'))
        else:
            causes.append(("FieldValueInvalid", where, f"Invalid value: {error.instance!r}: {error.message}"))
    return causes


def validate(resource: Resource, obj: dict) -> None:
    """Raise 422 Invalid when the object's name or (for a custom resource) its schema is wrong."""
    name = (obj.get("metadata") or {}).get("name", "")
    causes = []
    if not name:
        causes.append(("FieldValueRequired", "metadata.name", "Required value: name or generateName is required"))
    elif len(name) > 253 or not _SUBDOMAIN.match(name):
        causes.append(("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {_SUBDOMAIN_HELP}'))
    if resource.custom:
        causes += schema_causes(obj, resource.schema)
    if causes:
        raise status.invalid(resource.group, resource.kind, name, causes)
