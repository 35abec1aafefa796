# syntax=docker/dockerfile:1
# NMI, the node agent. Build from the repository root:
#   docker build -f deploy/docker/nmi.Dockerfile -t <registry>/pod-identity/nmi:<tag> .
#
# `make images` (scripts/images.sh) writes the same image without a registry or a base image, as an
# OCI tarball: the same paths, entrypoint, user and ports. There the binary is the dynamically
# linked one `cargo build` makes, and the image carries the glibc it was linked against (copied
# with `ldd`) instead of being static.
# Its iptables is this Debian's xtables-nft-multi and xtables-legacy-multi with their libraries and
# extensions, linked as below (iptables, iptables-restore, iptables-save, and the legacy ones under
# /usr/lib/pod-identity/iptables-legacy), plus /usr/bin/sleep for the chart's cleanup hook,
# Debian's conntrack (--enable-conntrack-deletion) and the CNI plugin pod-identity-cni, which NMI
# copies to the node (chart value nmi.cni).
#
# Stage 1: fully static `nmi` and `pod-identity-cni` binaries, built as in mic.Dockerfile (glibc
# `+crt-static`). The plugin must be static: the node's container runtime runs it, outside the image.
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eux; \
    triple="$(rustc -vV | sed -n 's/^host: //p')"; \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked -p nmi --bin nmi -p cni --bin pod-identity-cni --target "$triple"; \
    cp "target/$triple/release/nmi" /nmi; \
    cp "target/$triple/release/pod-identity-cni" /pod-identity-cni; \
    for b in /nmi /pod-identity-cni; do \
      if readelf -d "$b" | grep -q NEEDED; then echo "$b is not static" >&2; exit 1; fi; \
    done

# Stage 2: not distroless. NMI runs `iptables -w` and `iptables-restore -w --noflush` in the node's
# network namespace, and iptables is a dynamically linked program with plugin libraries (the DNAT
# target, the tcp match) loaded at run time, so a distroless or scratch image cannot carry it
# reliably. Debian slim with the distribution's iptables is the conventional answer (kube-proxy's
# images do the same).
#   - `iptables` is the nf_tables backend (Debian's default): it needs only CAP_NET_ADMIN.
#   - The legacy backend is also installed, behind /usr/lib/pod-identity/iptables-legacy/ (links
#     named `iptables` and `iptables-restore`); the chart puts that directory first in PATH, and
#     adds CAP_NET_RAW, when nmi.iptablesMode=legacy, because legacy iptables opens a raw socket.
#   - ca-certificates: NMI calls Entra ID for service-principal identities.
#   - conntrack: cuts pods' connections to 169.254.169.254 that bypass the rules.
FROM docker.io/library/debian:bookworm-slim
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends iptables conntrack ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    update-alternatives --set iptables /usr/sbin/iptables-nft; \
    mkdir -p /usr/lib/pod-identity/iptables-legacy; \
    ln -s /usr/sbin/iptables-legacy /usr/lib/pod-identity/iptables-legacy/iptables; \
    ln -s /usr/sbin/iptables-legacy-restore /usr/lib/pod-identity/iptables-legacy/iptables-restore; \
    iptables --version | grep -q nf_tables; \
    /usr/lib/pod-identity/iptables-legacy/iptables --version | grep -q legacy
COPY --from=build /nmi /usr/local/bin/nmi
COPY --from=build /pod-identity-cni /usr/local/bin/pod-identity-cni
# Root: iptables needs uid 0 in practice (capabilities added to a non-root user are not effective
# without ambient capabilities, which Kubernetes does not set). The chart grants only NET_ADMIN.
USER 0:0
EXPOSE 8085 9090
ENTRYPOINT ["/usr/local/bin/nmi"]
