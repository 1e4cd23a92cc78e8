# The two commands the README promises on a fresh Debian 12 machine.
.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/cni-ipam demo

test: setup
	bash scripts/test.sh $(PYTEST_ARGS)

bench: setup
	.venv/bin/python bench/plugin_latency.py

clean:
	rm -rf .venv build .pytest_cache .hypothesis
