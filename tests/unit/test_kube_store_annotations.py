"""The Kubernetes store's patches (store/kube_pools.py, pure): one annotation per allocation key, each change
guarded by its own ``test``, applied with the test API server's model of kube-apiserver's JSON Patch
(tests/kubeapi/patching.py).

Annotation names follow Kubernetes' rules (k8s.io/apimachinery pkg/util/validation/validation.go
``IsQualifiedName``: an optional DNS-subdomain prefix and ``/``, then a name of at most 63 characters of
``[A-Za-z0-9-_.]`` beginning and ending alphanumeric) and the total size rule
(pkg/api/validation/objectmeta.go ``ValidateAnnotationsSize``: keys and values, 256 KiB).
"""

from __future__ import annotations

import json
import re

import pytest
from kubeapi.patching import PatchFailed, apply_json_patch

from cni_ipam.kube import objects as ko
from cni_ipam.store import kube_pools as kube
from cni_ipam.store.base import Allocation

POOL = "/10.0.0.0/24"
QUALIFIED = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def row(cid: str, network: str = "net") -> list:
    return [cid, "eth0", network, 1, "node-a", f"/var/run/netns/{cid}", 1700000000.25]


def pool_object(keys: dict, notes=None, blob=None, annotations=None, rv="10") -> dict:
    """An IPPool as the API server returns it: ``keys``: key -> container ID; ``notes``: key -> row."""
    meta = {"name": "10.0.0.0-24", "namespace": "kube-system", "resourceVersion": rv}
    found = dict(annotations or {})
    found.update({kube.NOTE + k: kube.note_text(r) for k, r in (notes or {}).items()})
    if blob is not None:
        found[kube.ANNOTATION] = json.dumps(blob)
    if notes is not None or blob is not None or annotations is not None:
        meta["annotations"] = found
    return {"apiVersion": ko.API_VERSION, "kind": "IPPool", "metadata": meta,
            "spec": {"range": "10.0.0.0/24",
                     "allocations": {k: {"id": c, "podref": f"ns/{c}", "ifname": "eth0"} for k, c in keys.items()}}}


def allocation(offset: int, cid: str) -> Allocation:
    return Allocation(POOL, 0x0A000000 + offset, 4, "net", cid, "eth0", space="", pod=f"ns/{cid}", node="node-a",
                      netns=f"/var/run/netns/{cid}", created=1700000000.25)


def claim_ops(obj: dict, *claims) -> list:
    """What ``claim`` (or a batch of claims) sends for ``claims`` ((offset, cid) pairs), read from ``obj``."""
    pool = kube.Pool(obj)
    extras = dict(pool.extras)
    extras.update((str(o), kube.note_row(allocation(o, c))) for o, c in claims)
    add = {str(o): kube.upstream(allocation(o, c)) for o, c in claims}
    return ko.pool_patch(pool.parsed, add=add) + kube.annotation_ops(pool, extras)


def release_ops(obj: dict, offset: int) -> list:
    pool = kube.Pool(obj)
    key = str(offset)
    return ko.pool_patch(pool.parsed, remove=[key]) + kube.annotation_ops(
        pool, {k: v for k, v in pool.extras.items() if k != key})


def apply(obj: dict, ops: list) -> dict:
    return apply_json_patch(obj, ops)


def test_a_claim_adds_its_key_and_its_own_annotation_each_tested_absent():
    obj = pool_object({"1": "c1"}, notes={"1": row("c1")})
    ops = claim_ops(obj, (2, "c2"))
    assert ops == [
        {"op": "test", "path": "/spec/allocations/2", "value": None},
        {"op": "add", "path": "/spec/allocations/2", "value": {"id": "c2", "podref": "ns/c2", "ifname": "eth0"}},
        {"op": "test", "path": "/metadata/annotations/cni-ipam.io~1a.2", "value": None},
        {"op": "add", "path": "/metadata/annotations/cni-ipam.io~1a.2", "value": kube.note_text(row("c2"))},
    ]
    after = kube.Pool(apply(obj, ops))
    assert {a.container_id: a.network for a in after.allocations} == {"c1": "net", "c2": "net"}


def test_writers_of_different_keys_apply_in_any_order_on_what_the_other_wrote():
    obj = pool_object({"1": "c1", "3": "c3"}, notes={"1": row("c1"), "3": row("c3")})
    writes = [claim_ops(obj, (2, "c2")), claim_ops(obj, (4, "c4"), (5, "c5")), release_ops(obj, 1), release_ops(obj, 3)]
    for order in (writes, writes[::-1]):
        doc = obj
        for ops in order:  # each built from the same read, applied on what the others left
            doc = apply(doc, ops)
        assert sorted(doc["spec"]["allocations"]) == ["2", "4", "5"]
        assert sorted(doc["metadata"]["annotations"]) == [kube.NOTE + k for k in ("2", "4", "5")]


def test_a_stale_read_cannot_remove_or_overwrite_what_another_attachment_now_holds():
    obj = pool_object({"1": "c1"}, notes={"1": row("c1")})
    releasing, claiming = release_ops(obj, 1), claim_ops(pool_object({}, notes={}), (1, "c9"))
    now = apply(apply(obj, release_ops(obj, 1)), claim_ops(pool_object({}, notes={}), (1, "c2")))
    with pytest.raises(PatchFailed):
        apply(now, releasing)
    with pytest.raises(PatchFailed):
        apply(now, claiming)


def test_two_claims_of_one_key_from_one_read_the_second_fails():
    obj = pool_object({}, notes={})
    first = apply(obj, claim_ops(obj, (7, "a")))
    with pytest.raises(PatchFailed):
        apply(first, claim_ops(obj, (7, "b")))


def test_a_pool_without_annotations_gets_the_map_tested_absent():
    obj = pool_object({"1": "go-1"})
    ops = claim_ops(obj, (2, "c2"), (3, "c3"))
    assert ops[-2:] == [{"op": "test", "path": "/metadata/annotations", "value": None},
                        {"op": "add", "path": "/metadata/annotations",
                         "value": {kube.NOTE + "2": kube.note_text(row("c2")), kube.NOTE + "3": kube.note_text(row("c3"))}}]
    other = apply(obj, claim_ops(obj, (4, "c4")))  # a concurrent writer made the map first
    with pytest.raises(PatchFailed):
        apply(other, ops)


def test_the_old_single_annotation_is_read_then_replaced_under_a_test_of_its_text():
    blob = {"1": row("c1", "net-one"), "2": row("gone")}  # key 2 was removed by a Go writer: stale
    obj = pool_object({"1": "c1"}, blob=blob, annotations={"example.com/x": "y"})
    pool = kube.Pool(obj)
    assert [(a.container_id, a.network) for a in pool.allocations] == [("c1", "net-one")]
    assert sorted(pool.stale) == ["2"]
    ops = claim_ops(obj, (3, "c3"))
    blob_path = "/metadata/annotations/cni-ipam.io~1attachments"
    assert {"op": "test", "path": blob_path, "value": json.dumps(blob)} in ops
    assert {"op": "remove", "path": blob_path} in ops
    after = apply(obj, ops)
    assert sorted(after["metadata"]["annotations"]) == ["cni-ipam.io/a.1", "cni-ipam.io/a.3", "example.com/x"]
    assert json.loads(after["metadata"]["annotations"]["cni-ipam.io/a.1"]) == row("c1", "net-one")
    rewritten = json.loads(json.dumps(obj))  # an old writer rewrote it meanwhile
    rewritten["metadata"]["annotations"][kube.ANNOTATION] = json.dumps(dict(blob, **{"4": row("c4")}))
    with pytest.raises(PatchFailed):
        apply(rewritten, ops)


def test_per_key_annotations_win_over_the_old_one_and_count_only_for_their_holder():
    obj = pool_object({"1": "c1", "2": "c2"}, notes={"1": row("c1", "new"), "2": row("someone-else")},
                      blob={"1": row("c1", "old"), "2": row("c2", "old")})
    pool = kube.Pool(obj)
    assert {a.container_id: a.network for a in pool.allocations} == {"c1": "new", "c2": ""}
    assert sorted(pool.stale) == ["2"]


def test_each_write_drops_the_stale_annotations_it_read_under_a_test_of_their_text():
    obj = pool_object({"1": "c1"}, notes={"1": row("c1"), "5": row("gone")})
    ops = claim_ops(obj, (2, "c2"))
    note5 = "/metadata/annotations/cni-ipam.io~1a.5"
    assert [op for op in ops if op["path"] == note5] == [
        {"op": "test", "path": note5, "value": kube.note_text(row("gone"))}, {"op": "remove", "path": note5}]
    assert sorted(apply(obj, ops)["metadata"]["annotations"]) == ["cni-ipam.io/a.1", "cni-ipam.io/a.2"]


def test_update_owner_replaces_the_key_and_its_annotation_under_tests_of_both():
    obj = pool_object({"1": "c1"}, notes={"1": row("c1")})
    pool = kube.Pool(obj)
    moved = allocation(1, "c1b")
    extras = dict(pool.extras, **{"1": kube.note_row(moved)})
    ops = ko.pool_patch(pool.parsed, replace={"1": kube.upstream(moved)}) + kube.annotation_ops(pool, extras)
    assert not any(op["path"] == "/metadata/resourceVersion" for op in ops)
    after = kube.Pool(apply(obj, ops))
    assert [(a.container_id, a.network) for a in after.allocations] == [("c1b", "net")]
    with pytest.raises(PatchFailed):  # the annotation changed meanwhile
        apply(pool_object({"1": "c1"}, notes={"1": row("c1", "other")}), ops)


def test_an_unchanged_pool_needs_no_annotation_operations():
    obj = pool_object({"1": "c1"}, notes={"1": row("c1")})
    pool = kube.Pool(obj)
    assert kube.annotation_ops(pool, pool.extras) == []


def test_an_annotation_text_that_cannot_be_tested_exactly_falls_back_to_the_resource_version():
    obj = pool_object({"1": "c1"}, annotations={kube.NOTE + "5": '["gone","eth0","caf\u00e9"]'})
    ops = claim_ops(obj, (2, "c2"))
    assert {"op": "test", "path": "/metadata/resourceVersion", "value": "10"} in ops
    apply(obj, ops)
    with pytest.raises(PatchFailed):
        apply(dict(obj, metadata=dict(obj["metadata"], resourceVersion="11")), ops)


@pytest.mark.parametrize("key", ["0", "1", "4294967294", str(ko.MAX_OFFSET)])
def test_annotation_names_are_qualified_names_and_their_texts_plain(key):
    name = kube.note_name(key)
    prefix, rest = name.split("/")
    assert QUALIFIED.match(name) and len(prefix) <= 253 and len(rest) <= 63
    text = kube.note_text(["c\u00e9<&>\x7f", "eth0", "n", 1, "", "/x", 1.5])
    assert ko.plain(text) and json.loads(text) == ["c\u00e9<&>\x7f", "eth0", "n", 1, "", "/x", 1.5]


@pytest.mark.parametrize("key", ["-5", "+05", "a/b", "1" * 62, "\u0661"])
def test_keys_that_cannot_name_an_annotation_get_none(key):
    assert kube.note_name(key) is None


def test_past_the_budget_a_new_entry_loses_its_details_then_is_left_out():
    name, big = kube.NOTE + "2", "example.com/big"
    full, short = (len(name) + len(kube.note_text(r)) for r in (row("c2"), row("c2")[:4]))
    held = len(kube.NOTE + "1") + len(kube.note_text(row("c1"))) + len(big)
    filler = "x" * (kube.ANNOTATION_BUDGET - held - full + 1)  # the full row would pass the budget by one byte
    obj = pool_object({"1": "c1"}, notes={"1": row("c1")}, annotations={big: filler})
    ops = claim_ops(obj, (2, "c2"))
    written = [op["value"] for op in ops if op["op"] == "add" and op["path"].endswith("a.2")]
    assert [json.loads(v) for v in written] == [row("c2")[:4]]  # node, netns and time left out
    total = sum(len(k) + len(v) for k, v in apply(obj, ops)["metadata"]["annotations"].items())
    assert total <= kube.ANNOTATION_BUDGET < 256 * 1024
    fuller = pool_object({"1": "c1"}, notes={"1": row("c1")}, annotations={big: filler + "x" * (full - short)})
    ops = claim_ops(fuller, (2, "c2"))
    assert not any("a.2" in op["path"] for op in ops) and {"op": "test", "path": "/spec/allocations/2",
                                                           "value": None} in ops
    after = kube.Pool(apply(fuller, ops))
    assert {a.container_id: a.network for a in after.allocations} == {"c1": "net", "c2": ""}  # read as Go-written
