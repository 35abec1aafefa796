# pod-identity: `make test` is the test command (CI runs it through .ci/run).
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: test deps testbin fmt-check clippy deny shellcheck cycles unit crds fmt clean-cache bench soak manifests up down demo images

## test: everything CI checks: formatting, clippy -D warnings, cargo-deny, shellcheck, and all tests (unit and real-apiserver).
test: deps testbin fmt-check clippy deny shellcheck cycles unit
# A one-off build keeps no incremental state: it would only add gigabytes under target/ (Cargo.toml,
# [profile.dev], says why disk matters here).
test: export CARGO_INCREMENTAL = 0

## deps: install the system packages the tests need (apt, only what is missing).
deps:
	@scripts/disk-check.sh
	@scripts/install-deps.sh
	@scripts/python-venv.sh >/dev/null
	@scripts/azurite.sh install >/dev/null

## testbin: build kube-apiserver, etcd, kubectl, kubelet, kube-controller-manager, kube-scheduler, helm and upstream's NMI and MIC v1.8.17 from Go modules (cached in ~/.cache/pod-identity).
testbin:
	@scripts/testbin.sh >/dev/null

## images: OCI image tarballs of mic, nmi, azure-emulator and pause under target/images/, with no base
## image (scripts/images.sh). IMAGE_PROFILE=release for the optimised binaries (default: dev, the
## binaries `cargo test` builds, stripped). README "Container images" says how to push them.
IMAGE_PROFILE ?= dev
images:
	@IMAGE_PROFILE=$(IMAGE_PROFILE) scripts/images.sh

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## deny: cargo-deny's bans, licenses and sources checks (deny.toml), with a pinned cargo-deny built
## once into ~/.cache/pod-identity (scripts/cargo-deny.sh). Not advisories: its database is on GitHub,
## which CI cannot reach (deny.toml says how to run it with network).
deny:
	@CARGO=$(CARGO) scripts/cargo-deny.sh

## cycles: no import cycle among the Azure emulator's modules (scripts/modcycles.py says how one is
## counted). Other crates still have some; `scripts/modcycles.py crates/<name>/src` lists them.
cycles:
	python3 scripts/modcycles.py crates/azure-emulator/src

## shellcheck: lint every shell script (scripts/, .ci/run); `make deps` installs shellcheck.
shellcheck:
	shellcheck -x scripts/*.sh .ci/run

unit:
	$(CARGO) test --workspace --locked --no-fail-fast

## crds: regenerate deploy/crds/ from the Rust types in crates/api.
crds:
	$(CARGO) run -q -p api --bin crdgen > deploy/crds/aadpodidentity.k8s.io.yaml

fmt:
	$(CARGO) fmt --all

## bench: run the benchmarks (emulator, nmi, mic, a short soak); each merges its figures into
## target/bench/summary.json, then the table is printed once. BENCH_SECONDS sets the measuring time
## of each throughput run (default 10), SOAK_SECONDS the soak's length (default 60), MIC_BENCH_PODS
## the pods of MIC's memory-at-scale figure (default 10000), CHURN_SECONDS/CHURN_PODS the churn run's
## length (60 s or 500 pod lifecycles, with ARM operations of 2 s), READY_PODS the readiness run's
## pods (default 40, ARM operations of 2 s). See BENCHMARKS.md.
BENCH_SECONDS ?= 10
SOAK_SECONDS ?= 60
MIC_BENCH_PODS ?= 10000
CHURN_SECONDS ?= 60
CHURN_PODS ?= 500
READY_PODS ?= 40
BENCH := $(CARGO) run --release --locked -q -p bench --
bench:
	$(CARGO) build --release --locked -q -p bench -p nmi -p mic
	$(BENCH) emulator --seconds $(BENCH_SECONDS) --no-table
	$(BENCH) nmi --seconds $(BENCH_SECONDS) --no-table
	$(BENCH) fed --seconds $(BENCH_SECONDS) --no-table
	$(BENCH) mic --pods $(MIC_BENCH_PODS) --no-table
	$(BENCH) soak --seconds $(SOAK_SECONDS) --no-table
	$(BENCH) churn --seconds $(CHURN_SECONDS) --pods $(CHURN_PODS) --arm-latency-ms 2000 --no-table
	$(BENCH) ready --pods $(READY_PODS) --arm-latency-ms 2000 --no-table
	$(BENCH) show

## up: start the local sandbox (real etcd + kube-apiserver, the Azure emulator, Azurite, MIC, one NMI per node), as root.
# up and demo build only what the sandbox runs (scripts/sandbox.sh): not upstream's NMI and MIC.
up: deps
	@scripts/sandbox.sh up

## down: stop the sandbox and remove every process, network namespace and temporary file it made.
down:
	@scripts/sandbox.sh down

## demo: the seed walkthrough on the sandbox; ends with DEMO PASSED or DEMO FAILED. CLEAN=1 tears the sandbox down afterwards.
demo: deps
	@CLEAN=$(CLEAN) scripts/demo.sh

## manifests: copy deploy/crds/ into the Helm chart's crds/ and render deploy/manifests/*.yaml from the
## chart (helm template, with the helm testbin builds). The chart test fails when they drift.
manifests:
	cp deploy/crds/aadpodidentity.k8s.io.yaml deploy/charts/pod-identity/crds/aadpodidentity.k8s.io.yaml
	scripts/manifests.sh deploy/manifests

## soak: the full soak of issue 7 §4 (MIC and NMI under pod churn and steady token requests,
## memory sampled every 10 s) for SOAK_FULL_SECONDS (default 600); figures go to target/bench/summary.json.
SOAK_FULL_SECONDS ?= 600
soak:
	$(CARGO) build --release --locked -q -p bench -p nmi -p mic
	$(BENCH) soak --seconds $(SOAK_FULL_SECONDS)
