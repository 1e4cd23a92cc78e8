"""Multi-document YAML that people can read: keys in the order built, configs as block text."""

from __future__ import annotations


def dump_all(objects: list) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all(objects, Dumper=Dumper, sort_keys=False, default_flow_style=False,
                         explicit_start=True, width=1000)
