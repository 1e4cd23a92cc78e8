"""``cni-ipam render``: a Network resource in, the YAML to apply out.

Everything is checked before anything is written, so a refused input leaves
no half-written output (exit 2, the network's name and the reason on
stderr).  Notes (warnings from the plugins' parsers) go to stderr too.

``--plain --output-dir DIR`` writes the plain manifest set (``deploy/``)
instead, from the same functions (:mod:`.plain`).  This module also
registers ``cni-ipam sync-files`` (:mod:`.syncfiles`) and ``cni-ipam
node-kubeconfig`` (:mod:`.kubeconfig_writer`), which that set runs.
"""

from __future__ import annotations

import argparse
import sys

from .manifests import DEFAULT_CNI_BIN_DIR, DEFAULT_IMAGE, DEFAULT_NAMESPACE, DEFAULT_RUNTIME_DIR

PLAIN_NAMESPACE = "cni-ipam"  # plain.NAMESPACE; repeated so --help does not import the builders
PLAIN_CNI_BIN_DIR = "/opt/cni/bin"  # plain.CNI_BIN_DIR, plain.RUNTIME_DIR: repeated for the same reason
PLAIN_RUNTIME_DIR = "/opt/cni-ipam"
OUTPUT_FORMATS = ("yaml", "json")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "render", help="turn a Network.operator.openshift.io resource into the objects to apply",
        description="Reads spec.additionalNetworks (type Raw or SimpleMacvlan) and prints, as multi-document "
                    "YAML, one NetworkAttachmentDefinition per network, plus the DHCP daemon DaemonSet when a "
                    "network uses dhcp and the whereabouts-reconciler DaemonSet when one uses whereabouts, as "
                    "the Cluster Network Operator would, and the cni-ipam-installer and (for whereabouts) the "
                    "node agent cni-ipam-agent DaemonSets.",
        epilog="examples: 'cni-ipam render network.yaml --image registry.example.com/cni-ipam:0.1.0 | oc apply "
               "-f -'; 'cni-ipam render network.yaml -o json --output-file objects.json'; "
               "'cni-ipam render --plain --output-dir deploy' (docs/deploying.md)")
    p.add_argument("input", nargs="?", default=None, metavar="FILE",
                   help="the Network resource, YAML or JSON (default: stdin)")
    p.add_argument("--namespace", default=None, metavar="NS",
                   help=f"namespace of the daemon sets (default {DEFAULT_NAMESPACE}, with --plain "
                        f"{PLAIN_NAMESPACE}; it must exist, except with --plain, which creates it)")
    p.add_argument("--image", default=DEFAULT_IMAGE, metavar="IMAGE",
                   help=f"image holding cni-ipam (default {DEFAULT_IMAGE}, a placeholder: use your own)")
    p.add_argument("--cni-bin-dir", default=None, metavar="DIR",
                   help=f"the nodes' CNI bin dir, where the plugins are installed (default {DEFAULT_CNI_BIN_DIR}, "
                        f"OpenShift's; with --plain {PLAIN_CNI_BIN_DIR})")
    p.add_argument("--runtime-dir", default=None, metavar="DIR",
                   help=f"where the install step puts the Python runtime the launchers run on each node "
                        f"(default {DEFAULT_RUNTIME_DIR}; with --plain {PLAIN_RUNTIME_DIR})")
    p.add_argument("--agent", action=argparse.BooleanOptionalAction, default=None,
                   help="the node agent DaemonSet cni-ipam-agent, and the native forwarder to it installed as "
                        "whereabouts, when a network uses whereabouts (the default; --no-agent: neither, the "
                        "plugins do the work themselves; docs/agent.md)")
    p.add_argument("--no-kubernetes-source", dest="kubernetes_source", action="store_false",
                   help="reconciler without the kubernetes liveness source: netns only, and no RBAC at all")
    p.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="yaml",
                   help="output format, as for pools and allocations: yaml (default: one document per object) "
                        "or json (one v1 List); both go to 'oc apply -f -'")
    p.add_argument("--output-file", default="-", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--plain", action="store_true",
                   help="write the plain manifest set for clusters without the OpenShift operator (no FILE), "
                        "one kustomization per directory, into --output-dir")
    p.add_argument("--output-dir", metavar="DIR", help="with --plain: where to write it (e.g. deploy)")
    p.set_defaults(func=cmd_render)

    from .kubeconfig_writer import register as register_node_kubeconfig
    from .syncfiles import register as register_sync_files

    register_sync_files(subparsers)
    register_node_kubeconfig(subparsers)


def read_resource(path: str):
    """The resource from a file or stdin; YAML is a superset of JSON, so one loader reads both."""
    import yaml

    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    if len(documents) != 1:
        raise ValueError(f"expected one Network resource, found {len(documents)} YAML documents")
    return documents[0]


def render_text(resource, options, output: str = "yaml") -> tuple:
    """(text in the ``output`` format, notes); raises RenderError."""
    from .manifests import render
    from .networks import additional_networks

    networks = additional_networks(resource)
    notes = [note for n in networks for note in n.notes]
    return formatted(render(networks, options), output), notes


def formatted(objects: list, output: str) -> str:
    """Multi-document YAML, or JSON as one ``v1`` ``List`` (what ``kubectl get -o json`` prints for several)."""
    if output == "json":
        import json

        return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2) + "\n"
    from .yamlout import dump_all

    return dump_all(objects)


def _dir(path: str) -> str:
    return path.rstrip("/") or "/"


def options_from(args):
    from .manifests import Options

    return Options(namespace=args.namespace or DEFAULT_NAMESPACE, image=args.image,
                   cni_bin_dir=_dir(args.cni_bin_dir or DEFAULT_CNI_BIN_DIR),
                   runtime_dir=_dir(args.runtime_dir or DEFAULT_RUNTIME_DIR),
                   kubernetes_source=args.kubernetes_source, agent=args.agent is not False)


def cmd_plain(args) -> int:
    """The plain set: no input; refuses the flags that only make sense for a Network resource."""
    from .plain import plain_files, plain_options, write_plain

    if args.input is not None or args.output_file != "-" or args.output != "yaml" or not args.output_dir:
        print("cni-ipam render: --plain reads no FILE and writes YAML files into --output-dir DIR, with no "
              "--output-file or -o json", file=sys.stderr)
        return 2
    options = plain_options(namespace=args.namespace or PLAIN_NAMESPACE, image=args.image,
                            cni_bin_dir=_dir(args.cni_bin_dir or PLAIN_CNI_BIN_DIR),
                            runtime_dir=_dir(args.runtime_dir or PLAIN_RUNTIME_DIR),
                            kubernetes_source=args.kubernetes_source, agent=args.agent is not False)
    for path in write_plain(args.output_dir, plain_files(options)):
        print(f"wrote {path}")
    return 0


def cmd_render(args) -> int:
    from .networks import RenderError

    import yaml

    if args.plain:
        return cmd_plain(args)
    if args.output_dir:
        print("cni-ipam render: --output-dir goes with --plain; use --output-file FILE for a Network's objects",
              file=sys.stderr)
        return 2
    args.input = args.input or "-"
    source = "stdin" if args.input == "-" else args.input
    try:
        resource = read_resource(args.input)
    except OSError as exc:
        print(f"cni-ipam render: cannot read {source}: {exc}", file=sys.stderr)
        return 2
    except (yaml.YAMLError, ValueError) as exc:
        print(f"cni-ipam render: {source} is not one YAML or JSON document: {exc}", file=sys.stderr)
        return 2
    options = options_from(args)
    try:
        text, notes = render_text(resource, options, args.output)
    except RenderError as exc:
        for error in getattr(exc, "errors", [exc]):
            print(f"cni-ipam render: refused, nothing written: {error}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"cni-ipam render: note: {note}", file=sys.stderr)
    if args.output_file == "-":
        sys.stdout.write(text)
    else:
        with open(args.output_file, "w", encoding="utf-8") as out:
            out.write(text)
    return 0
