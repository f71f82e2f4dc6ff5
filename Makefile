# `make test` is the one command that runs everything: Rust unit, property, stress and doc
# tests, the loom model checks, then the Python package (built and installed from this tree)
# under pytest.
PYTHON ?= python3

.PHONY: test test-rust test-loom test-python bench

test: test-rust test-loom test-python

test-rust:
	cargo test --workspace --exclude circuit_breaker_py --release

# loom builds with its own cfg, so it gets its own target dir and never invalidates the normal one.
test-loom:
	RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
		cargo test -p loom-tests --release

test-python:
	$(PYTHON) -m pip install --quiet --force-reinstall --no-deps .
	$(PYTHON) -m pytest
