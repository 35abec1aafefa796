# syntax=docker/dockerfile:1
# MIC, the Managed Identity Controller. Build from the repository root:
#   docker build -f deploy/docker/mic.Dockerfile -t <registry>/pod-identity/mic:<tag> .
#
# `make images` (scripts/images.sh) writes the same image without a registry or a base image, as an
# OCI tarball: the same paths, entrypoint, user and ports. There the binary is the dynamically
# linked one `cargo build` makes, and the image carries the glibc it was linked against (copied
# with `ldd`) instead of being static.
#
# Stage 1 builds a fully static binary: glibc with `+crt-static` (static-pie). glibc rather than
# musl keeps glibc's allocator (musl's malloc is much slower under multi-threaded load) and works
# with aws-lc-rs (rustls's crypto provider), whose C sources the `cc` crate compiles with the
# image's gcc. The check after the build refuses a binary that needs any shared library. `--target` is required with crt-static so that build scripts and proc-macros are
# still built dynamically for the host.
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eux; \
    triple="$(rustc -vV | sed -n 's/^host: //p')"; \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked -p mic --bin mic --target "$triple"; \
    cp "target/$triple/release/mic" /mic; \
    if readelf -d /mic | grep -q NEEDED; then echo "mic is not static" >&2; exit 1; fi

# Stage 2: distroless static (CA certificates, /etc/passwd, no shell). MIC needs nothing else: it
# talks to the Kubernetes API, ARM, Entra ID and IMDS over HTTP(S) with rustls.
# The image's default user is nonroot (65532); the chart runs MIC as uid 0 only when it reads the
# node's /etc/kubernetes/azure.json (0600 root on AKS), with every capability dropped.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /mic /usr/local/bin/mic
USER 65532:65532
EXPOSE 8080 8888
ENTRYPOINT ["/usr/local/bin/mic"]
