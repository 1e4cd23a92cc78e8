"""The lab's own promises: a clean CNI environment never reaches a stray agent, and the demo fails on a leak."""

from cni_ipam.net import pool_name
from cni_ipam.store.base import Allocation
from cni_ipam.store.sqlite import SQLiteStore
from cni_ipam_lab import demo
from cni_ipam_lab.namespaces import cni_env


def test_a_clean_cni_environment_never_uses_an_agent_unless_asked():
    assert cni_env("ADD", "c1", "/run/netns/p", "net1")["CNI_IPAM_AGENT_SOCKET"] == ""
    asked = cni_env("ADD", "c1", extra={"CNI_IPAM_AGENT_SOCKET": "/tmp/agent.sock"})
    assert asked["CNI_IPAM_AGENT_SOCKET"] == "/tmp/agent.sock"


def test_the_demo_counts_an_address_left_after_del_as_a_failure(tmp_path, capsys):
    db = str(tmp_path / "store" / "whereabouts.db")
    store = SQLiteStore(db)
    try:
        with store.transaction():
            pass  # the schema, as after a demo whose DELs all freed their address
        assert demo._store_left(db, "removed 2 containers") == 0
        assert "addresses held in the store now: 0" in capsys.readouterr().out
        leaked = Allocation(pool_name("", "192.0.2.0/24"), 0xC0000205, 4, "net1", "c1", "net1")
        with store.transaction():
            assert store.claim(leaked)
    finally:
        store.close()
    assert demo._store_left(db, "removed 2 containers") == 1
    assert "held in the store now: 1 -- FAILED: every DEL must free its address" in capsys.readouterr().out
