# rudder-kustomer: `make run` (offline dry run of the sample events: `rudder-kustomer plan`) and `make test` (everything).
SAMPLES := events/rudderstack-identify.json events/rudderstack-track.json \
           events/rudderstack-page.json events/rudderstack-screen.json \
           events/rudderstack-group.json
# Tools `make test` installed itself (scripts/tools.sh) live in .venv/bin: last on PATH,
# so tools already on the machine are used first.
export PATH := $(PATH):$(CURDIR)/.venv/bin
# The shared conformance corpus, when it sits beside the checkout: run as well as the
# repo's own cases (tests/cases). Set KUSTOMER_CONFORMANCE_DIR to run another folder.
SHARED_CASES := $(wildcard $(CURDIR)/../shared/conformance/cases)
ifneq ($(SHARED_CASES),)
export KUSTOMER_CONFORMANCE_DIR ?= $(abspath $(SHARED_CASES))
endif
# Integration test targets besides conformance (which prints its own summary line).
TESTS := $(patsubst tests/%.rs,--test %,$(filter-out tests/conformance.rs,$(wildcard tests/*.rs)))

.PHONY: run test tools unit conformance lint fmt fmt-check clippy cfn-lint build release bench watch fuzz memory fleet

run:
	cargo run --quiet --no-default-features --bin rudder-kustomer -- plan $(SAMPLES)

test: tools fmt-check clippy cfn-lint unit conformance

# moto, cfn-lint and cargo-lambda when missing (into .venv, pinned), rustfmt and clippy.
tools:
	bash scripts/tools.sh

unit:
	cargo test -p kustomer-mapping
	cargo test --lib --bins $(TESTS)
	cargo test -p workload

conformance:
	cargo test --test conformance -- --nocapture

# Fuzz targets (tests/fuzz.rs) for FUZZ_SECONDS each (default 60), from a random seed.
# `make test` runs them too, for a small fixed number of cases.
fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} cargo test --profile fuzz --test fuzz -- --nocapture --test-threads=1

# Peak RSS of the release bootstrap on the largest payloads (scripts/memory.py; measured,
# never asserted): a 1 MB webhook body of 20,000 users, an SQS record of 85,000 events,
# a 6 MB direct invocation of 100,000 users.
memory:
	cargo build --release --bin bootstrap
	python3 scripts/memory.py target/release/bootstrap

# The fleet test (issue 18, tests/fleet.rs): 3 release `bootstrap` processes, each under a
# Runtime API emulator, drain one shared in-process queue (standard; FIFO without, then with
# the fleet's ledger in moto's DynamoDB; 3,000 events of 150 users) into one stub Kustomer
# with a budget of 2,000 requests a minute; prints the runs' figures side by side. Measured,
# never asserted; takes several minutes. `make test`
# runs the small asserted version (small_fleet_fifo). FLEET_BINARY picks another binary;
# FLEET_VISIBILITY_SECONDS, FLEET_WINDOW_SECONDS and FLEET_TIMEOUT_SECONDS change the run.
fleet: tools
	cargo build --release --bin bootstrap
	cargo test --test fleet -- --ignored --exact fleet --nocapture

lint: fmt-check clippy cfn-lint

fmt:
	cargo fmt --all

fmt-check:
	cargo fmt --all --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --no-default-features --bins -- -D warnings

cfn-lint:
	cfn-lint template.yaml

build:
	cargo build --release

# The Lambda artifact, as `sam build` makes it (native x86_64 build; see README for arm64).
release:
	cargo lambda build --release --compiler cargo

watch:
	cargo lambda watch -A 127.0.0.1 -P 9000

# Benchmarks: measured, never asserted. Mapping (criterion), delivery load against the
# stub with 50 ms per request, the transform CLI's peak memory, cold start and size.
BENCH_DIR := target/bench
BENCH_EVENTS := $(BENCH_DIR)/workload-10000.jsonl

bench:
	cargo bench --bench mapping
	cargo bench --bench load
	cargo build --release --bin transform --bin bootstrap
	cargo build --release -p workload
	mkdir -p $(BENCH_DIR)
	target/release/workload 10000 > $(BENCH_EVENTS)
	test -x /usr/bin/time || (apt-get update -qq && apt-get install -y -qq time)
	/usr/bin/time -v -o $(BENCH_DIR)/transform-time.txt target/release/transform --compact $(BENCH_EVENTS) > /dev/null
	grep -E 'Elapsed|Maximum resident' $(BENCH_DIR)/transform-time.txt
	python3 scripts/coldstart.py target/release/bootstrap --runs 20 --moto
