"""The plugin table (cni_ipam.plugins.table): every name leads to code that exists, and it stays a leaf."""

import ast
import importlib
import inspect

from cni_ipam.plugins import table


def test_every_entry_point_is_a_function_taking_no_arguments():
    for name, entry in table.PLUGINS.items():
        module, function = entry.split(":")
        main = getattr(importlib.import_module(module), function)
        assert callable(main) and not inspect.signature(main).parameters, (name, entry)


def test_every_plugin_the_agent_serves_is_installed_and_its_module_holds_that_plugin():
    for name, module in table.SERVED_BY_AGENT.items():
        assert name in table.PLUGINS
        assert importlib.import_module(module).PLUGIN.name == name


def test_each_entry_point_of_a_plugin_the_agent_serves_runs_the_module_of_the_table(monkeypatch):
    """agent_client names the module itself (one import fewer per call): it must be the table's."""
    from cni_ipam import agent_client

    ran = []
    monkeypatch.setattr(agent_client, "main_via_agent", lambda name, module: ran.append((name, module)))
    for name, module in table.SERVED_BY_AGENT.items():
        entry_module, function = table.PLUGINS[name].split(":")
        getattr(importlib.import_module(entry_module), function)()
        assert ran.pop() == (name, module)


def test_the_table_imports_nothing():
    """Plugin processes read it at every call, and every part that names plugins imports it: no cycle."""
    tree = ast.parse(inspect.getsource(table))
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
