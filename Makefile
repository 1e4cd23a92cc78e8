# The two commands the README promises on a fresh Debian 12 machine.
.PHONY: setup native demo test bench clean

setup:
	@bash scripts/setup.sh

# The native forwarder to the node agent (setup builds it too): where 'cni-ipam install --native' finds it.
native:
	bash native/build.sh .venv/libexec/cni-ipam/cni-ipam-forward

demo: setup
	.venv/bin/cni-ipam demo

test: setup
	bash scripts/test.sh $(PYTEST_ARGS)

bench: setup
	.venv/bin/python bench/plugin_latency.py

clean:
	rm -rf .venv build .pytest_cache .hypothesis
