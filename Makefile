# rudder-kustomer: `make run` (offline dry run of the sample events) and `make test` (everything).
SAMPLES := events/rudderstack-identify.json events/rudderstack-track.json \
           events/rudderstack-page.json events/rudderstack-screen.json
# Integration test targets besides conformance (which prints its own summary line).
TESTS := $(patsubst tests/%.rs,--test %,$(filter-out tests/conformance.rs,$(wildcard tests/*.rs)))

.PHONY: run test unit conformance lint fmt fmt-check clippy cfn-lint build release bench watch

run:
	cargo run --quiet --bin transform -- $(SAMPLES)

test: fmt-check clippy cfn-lint unit conformance

unit:
	cargo test --lib --bins $(TESTS)

conformance:
	cargo test --test conformance -- --nocapture

lint: fmt-check clippy cfn-lint

fmt:
	cargo fmt

fmt-check:
	cargo fmt --check

clippy:
	cargo clippy --all-targets -- -D warnings

cfn-lint:
	cfn-lint template.yaml

build:
	cargo build --release

# The Lambda artifact, as `sam build` makes it (native x86_64 build; see README for arm64).
release:
	cargo lambda build --release --compiler cargo

watch:
	cargo lambda watch -A 127.0.0.1 -P 9000
