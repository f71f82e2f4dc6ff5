# `make test` is the one command that runs everything: Rust unit, property, stress and doc
# tests, the loom model checks, then the Python package (built and installed from this tree)
# under pytest.
PYTHON ?= python3

.PHONY: test test-rust test-loom test-python bench

test: test-rust test-loom test-python

test-rust:
	cargo test --workspace --exclude circuit_breaker_py --release --features cb_core/shared-memory,cb_core/redis-tls,cb_core/tower
	cargo test -p cb_core --release --features tracing --test tracing_events
	cargo run -q --release -p cb_core --features shared-memory --example shared_memory
	cargo run -q --release -p cb_core --features tower --example axum_service
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

# loom builds with its own cfg, so it gets its own target dir and never invalidates the normal one.
test-loom:
	RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
		cargo test -p loom-tests --release

test-python:
	$(PYTHON) -m pip install --quiet --force-reinstall --no-deps .
	$(PYTHON) -m pytest

# Regenerates every figure in BENCHMARKS.md (about 7 minutes on 2 cores): criterion for Rust,
# the Redis store's propagation and commands per call (redis-server on the PATH), instruction
# counts under callgrind, and the interleaved Python benchmark.
bench:
	$(PYTHON) -m pip install --quiet --force-reinstall --no-deps .
	$(PYTHON) -m pip install --quiet pybreaker circuitbreaker redis
	cargo bench -p benches --bench breakers
	cargo build --release -p benches --example icount
	@mkdir -p target/bench
	$(PYTHON) benches/report.py > target/bench/rust.md
	cargo run -q --release -p benches --example redis_fleet > target/bench/redis.md
	for case in baseline clock closed/none closed/counters open/none open/counters \
			failure/none failure/counters failure/with_times cycle/none cycle/counters \
			rate/count rate/time rate/time_failure rate/count_failure rate/count_failure_rates_only \
			future/closed future/open tower/none tower/closed tower/open tower/static \
			limit/none limit/counters limit/tower; do \
		printf '%s ' $$case; valgrind --tool=callgrind --callgrind-out-file=/dev/null \
			target/release/examples/icount $$case 2>&1 | awk '/Collected/ {print $$4}'; \
	done > target/bench/icount.txt
	$(PYTHON) benches/python/bench.py > target/bench/python.md
	$(PYTHON) benches/python/icount.py report > target/bench/python-icount.md
	@cat target/bench/rust.md target/bench/redis.md target/bench/icount.txt target/bench/python.md target/bench/python-icount.md
