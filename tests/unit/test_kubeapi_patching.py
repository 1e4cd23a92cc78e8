"""The test API server's JSON Patch follows evanphx/json-patch v4 (kube-apiserver's library), its selectors kube's grammar.

Cases from evanphx/json-patch patch.go and patch_test.go @
84a4bb100ade42a86fce2647c95a7dbcbf569cb2, and RFC 6902 / RFC 7386.
"""

import pytest

from kubeapi.patching import BadPatch, PatchFailed, apply_json_patch, apply_merge_patch
from kubeapi.selectors import field_selector, label_selector
from kubeapi.status import StatusError

POOL = {"metadata": {"resourceVersion": "7"}, "spec": {"allocations": {"1": {"id": "a"}}, "list": [1, 2]}}


def test_upstream_whereabouts_patch_applies_and_leaves_the_input_alone():
    patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
             {"op": "test", "path": "/spec/allocations/2", "value": None},
             {"op": "add", "path": "/spec/allocations/2", "value": {"id": "b"}}]
    result = apply_json_patch(POOL, patch)
    assert result["spec"]["allocations"] == {"1": {"id": "a"}, "2": {"id": "b"}}
    assert POOL["spec"]["allocations"] == {"1": {"id": "a"}}


@pytest.mark.parametrize("op", [
    {"op": "test", "path": "/metadata/resourceVersion", "value": 7},  # a number is not the string "7"
    {"op": "test", "path": "/spec/allocations/1", "value": None},  # present: null does not match
    {"op": "test", "path": "/spec/list/0", "value": True},  # true is not 1
    {"op": "test", "path": "/nothing/here", "value": None},  # the parent is missing
    {"op": "replace", "path": "/spec/missing", "value": 1},  # v4 replaces only what exists
    {"op": "remove", "path": "/spec/missing"},
    {"op": "add", "path": "/spec/list/5", "value": 1},  # past the end
])
def test_operations_that_do_not_apply_fail(op):
    with pytest.raises(PatchFailed):
        apply_json_patch(POOL, [op])


def test_array_and_move_copy_operations():
    result = apply_json_patch(POOL, [{"op": "add", "path": "/spec/list/-", "value": 3},
                                     {"op": "copy", "from": "/spec/list", "path": "/spec/copied"},
                                     {"op": "move", "from": "/spec/list/0", "path": "/spec/first"},
                                     {"op": "remove", "path": "/spec/allocations/1"}])
    assert result["spec"] == {"allocations": {}, "list": [2, 3], "copied": [1, 2, 3], "first": 1}


def test_a_patch_that_is_not_a_list_of_operations_is_a_bad_request():
    with pytest.raises(BadPatch):
        apply_json_patch(POOL, {"op": "add"})
    with pytest.raises(BadPatch):
        apply_json_patch(POOL, [{"op": "frobnicate", "path": "/spec"}])


def test_merge_patch_removes_with_null_and_replaces_lists():
    result = apply_merge_patch(POOL, {"spec": {"allocations": {"1": None, "3": {"id": "c"}}, "list": [9]}})
    assert result["spec"] == {"allocations": {"3": {"id": "c"}}, "list": [9]}


def test_label_and_field_selectors():
    pod = {"metadata": {"name": "p", "labels": {"app": "web", "tier": "front"}},
           "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    for text, expected in (("app=web", True), ("app==web,tier!=back", True), ("app in (db, web)", True),
                           ("app notin (web)", False), ("tier", True), ("!tier", False), ("", True)):
        assert label_selector(text)(pod) is expected, text
    fields = ("metadata.name", "spec.nodeName", "status.phase")
    assert field_selector("spec.nodeName=n1,status.phase!=Failed", fields)(pod)
    assert not field_selector("spec.nodeName=n2", fields)(pod)
    with pytest.raises(StatusError) as refused:
        field_selector("spec.hostNetwork=true", fields)
    assert refused.value.code == 400
