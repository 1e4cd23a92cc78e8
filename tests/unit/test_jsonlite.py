"""cni_ipam.jsonlite: the plugins' JSON, checked against the json module it replaces."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from cni_ipam import jsonlite

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(VALUES)
def test_round_trip_agrees_with_json(value):
    text = jsonlite.dumps(value)
    assert json.loads(text) == value
    assert jsonlite.loads(text) == value
    assert jsonlite.loads(json.dumps(value, indent=4).encode()) == value


def test_output_is_compact_and_ascii_on_request():
    assert jsonlite.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    assert jsonlite.dumps("é", ascii=True) == '"\\u00e9"'


@pytest.mark.parametrize("text", ["", "{", "{} x", "[1,]", '{"a":1,}', '"\x01"', '{"a" 1}', "NaN", "Infinity",
                                  "-Infinity", "[NaN]"])
def test_invalid_documents_are_value_errors(text):
    with pytest.raises(ValueError):
        jsonlite.loads(text)


def test_invalid_utf8_is_a_value_error():
    with pytest.raises(ValueError):
        jsonlite.loads(b"\xff")


def test_importing_it_does_not_import_json_re_or_enum():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import cni_ipam.jsonlite as j; j.loads('{\"a\": [1]}'); "
            "j.dumps({'a': 1}); print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))")
    import cni_ipam

    src = cni_ipam.__path__[0].rsplit("/", 1)[0]
    done = subprocess.run([sys.executable, "-IS", "-c", code, src], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --- hostile documents (issue 14) ----------------------------------------------------------------

@pytest.mark.parametrize("depth", [jsonlite.MAX_DEPTH + 1, 995, 1000, 100_000])
def test_nesting_beyond_the_limit_is_a_value_error_naming_it(depth):
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        with pytest.raises(ValueError, match=f"nested more than {jsonlite.MAX_DEPTH} levels"):
            jsonlite.loads(opener * depth + "1" + closer * depth)


def test_nesting_up_to_the_limit_is_accepted():
    depth = jsonlite.MAX_DEPTH
    assert jsonlite.loads("[" * depth + "]" * depth) is not None
    many_flat = "[" + ",".join(["[]"] * 5000) + "]"  # many brackets, little depth
    assert len(jsonlite.loads(many_flat)) == 5000


@pytest.mark.parametrize("text", ['"\\ud800"', '{"a": ["x\\uDFFF"]}', '{"\\udcff": 1}'])
def test_unpaired_surrogate_escapes_are_refused_on_request(text):
    assert jsonlite.loads(text) is not None  # the protocol framing keeps them (surrogate-escaped env)
    with pytest.raises(ValueError, match="unpaired UTF-16 surrogate"):
        jsonlite.loads(text, unicode_only=True)


def test_paired_surrogate_escapes_are_one_character():
    assert jsonlite.loads('"\\ud83d\\ude00"', unicode_only=True) == "\U0001F600"
