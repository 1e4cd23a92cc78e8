"""The kubeconfig YAML reader: what it reads equals PyYAML's reading; what it refuses names the line."""

import pytest
import yaml

from cni_ipam.kube import miniyaml

# Each document is read by both readers and must come out the same.
AGREED = [
    "",
    "# only a comment\n",
    "a: 1\n",
    "---\na: b\n...\n",
    "--- # start\na: b\n",
    "a:\n  b:\n    c: 1\n  d: 2\ne: 3\n",
    # kubectl style: sequences at the indentation of their key
    "clusters:\n- name: x\n  cluster:\n    server: https://h:6443\nusers:\n- name: u\n  user: {}\n",
    # ...and indented under it
    "clusters:\n  - name: x\n    cluster:\n      server: https://h\n",
    "- a\n- b: c\n  d: e\n-\n  f: g\n- - h\n  - i\n",
    "a: 'it''s # not a comment'\nb: \"q \\\" \\\\ \\t \\u00e9 \\x41 \\U0001F600 \\/\"\n",
    "a: x#y\nb: x # comment\nc:    # empty with comment\nd: ~\ne: null\nf: Null\n",
    "a: true\nb: False\nc: yes\nd: NO\ne: on\nf: Off\n",
    "a: 10.0.0.1\nb: 1.5\nc: -3\nd: +4\ne: 0\nf: 1.\ng: fd00::1\nh: a:b\n",
    "a: https://[fd00::1]:6443/some/path\n",
    "preferences: {}\nextensions: []\nj: {\"x\": [1, \"y\", null]}  # comment\n",
    "\"quoted key\": 1\n'single': 2\nkey with spaces: 3\n",
    '{"apiVersion": "v1", "clusters": [{"name": "a"}]}',
    '# JSON after a comment\n{"a": [1,\n  2]}\n',
    "a: -\\x\nb: -1x\n",
    "a: b\r\nc: d\r\n",
    "\ufeffa: 1\n",
    "a:\n  - x\n  # comment between\n  - z\n\nb: 2\n",
]


@pytest.mark.parametrize("text", AGREED)
def test_reads_as_pyyaml_does(text):
    assert miniyaml.loads(text) == yaml.safe_load(text)


def test_bytes_are_utf8():
    assert miniyaml.loads("a: é\n".encode()) == {"a": "é"}


# (document, line named in the error, words the message contains)
REFUSED = [
    ("a: &x 1\n", 1, "anchors"),
    ("a: 1\nb: *x\n", 2, "aliases"),
    ("a: !!str 1\n", 1, "tags"),
    ("a: |\n  x\n", 1, "block scalars"),
    ("a: >\n  x\n", 1, "folded block scalars"),
    ("a: b\n  c\n", 2, "spanning several lines"),
    ("a: \"b\n  c\"\n", 1, "must close on the line"),
    ("%YAML 1.1\n---\na: 1\n", 1, "directives"),
    ("? a\n: b\n", 1, "complex keys"),
    ("<<: {\"a\": 1}\n", 1, "merge keys"),
    ("a: {b: c}\n", 1, "must be JSON"),
    ("a:\n\t- b\n", 2, "tabs"),
    ("a: 1\na: 2\n", 2, "duplicate key"),
    ("a: 1\n---\nb: 2\n", 2, "one document"),
    ("a: 1\n...\nb: 2\n", 3, "after the end"),
    ("a: b: c\n", 1, "quote the value"),
    ("a: - b\n", 1, "sequence entry"),
    ("a: 1\n- b\n", 2, "sequence entry"),
    ("- a\nb: c\n", 2, "unexpected"),
    ("  a: 1\n b: 2\n", 2, "unexpected"),
    ("a: \"x\" y\n", 1, "after the quoted scalar"),
    ("a: \"\\q\"\n", 1, "invalid escape"),
    ("a: y\n", 1, "quote it"),
    ("a: 0x1F\n", 1, "quote it"),
    ("a: 0644\n", 1, "quote it"),
    ("a: 1e3\n", 1, "quote it"),
    ("a: 1_000\n", 1, "quote it"),
    ("a: 1:30\n", 1, "quote it"),
    ("a: 2024-01-01\n", 1, "quote it"),
    ("a: .inf\n", 1, "quote it"),
    ('{"a": }', 1, "must be JSON"),
]


@pytest.mark.parametrize("text,line,words", REFUSED)
def test_refuses_naming_the_line(text, line, words):
    with pytest.raises(miniyaml.YAMLError) as info:
        miniyaml.loads(text)
    assert info.value.line == line
    assert words in str(info.value)
    assert str(info.value).startswith(f"line {line}: ")


@pytest.mark.parametrize("text", ["a: \"0x1F\"\n", "a: '1e3'\n", "a: \"y\"\n", "a: '2024-01-01'\n"])
def test_quoted_forms_of_refused_scalars_are_strings(text):
    assert miniyaml.loads(text) == yaml.safe_load(text)
    assert isinstance(miniyaml.loads(text)["a"], str)
