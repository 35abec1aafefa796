# syntax=docker/dockerfile:1
# The Azure emulator (IMDS, ARM, Entra ID stand-ins) for test clusters. Build from the repository root:
#   docker build -f deploy/docker/azure-emulator.Dockerfile -t <registry>/pod-identity/azure-emulator:<tag> .
#
# `make images` (scripts/images.sh) writes the same image without a registry or a base image, as an
# OCI tarball: /usr/local/bin/azure-emulator as the entrypoint, a CA bundle, /etc/passwd; there the
# binary is dynamically linked and the image carries its glibc (copied with `ldd`).
# Stage 1: a fully static binary, as in mic.Dockerfile (glibc `+crt-static`).
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eux; \
    triple="$(rustc -vV | sed -n 's/^host: //p')"; \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked -p azure-emulator --bin azure-emulator --target "$triple"; \
    cp "target/$triple/release/azure-emulator" /azure-emulator; \
    if readelf -d /azure-emulator | grep -q NEEDED; then echo "azure-emulator is not static" >&2; exit 1; fi

# Stage 2: distroless static (CA certificates, /etc/passwd). It takes its world file with --config.
FROM gcr.io/distroless/static-debian12
COPY --from=build /azure-emulator /usr/local/bin/azure-emulator
ENTRYPOINT ["/usr/local/bin/azure-emulator"]
