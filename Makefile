# pod-identity: `make test` is the test command (CI runs it through .ci/run).
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: test deps testbin fmt-check clippy unit crds fmt clean-cache bench

## test: everything CI checks: formatting, clippy -D warnings, and all tests (unit and real-apiserver).
test: deps testbin fmt-check clippy unit

## deps: install the system packages the tests need (apt, only what is missing).
deps:
	@scripts/install-deps.sh
	@scripts/python-venv.sh >/dev/null
	@scripts/azurite.sh install >/dev/null

## testbin: build kube-apiserver, etcd, kubectl and helm from Go modules (cached in ~/.cache/pod-identity).
testbin:
	@scripts/testbin.sh >/dev/null

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked --no-fail-fast

## crds: regenerate deploy/crds/ from the Rust types in crates/api.
crds:
	$(CARGO) run -q -p api --bin crdgen > deploy/crds/aadpodidentity.k8s.io.yaml

fmt:
	$(CARGO) fmt --all

## bench: run the benchmarks; each merges its figures into target/bench/summary.json, then the table is printed.
## BENCH_SECONDS sets the measuring time of each (default 10). See BENCHMARKS.md.
BENCH_SECONDS ?= 10
bench:
	$(CARGO) run --release --locked -q -p bench -- emulator --seconds $(BENCH_SECONDS)
