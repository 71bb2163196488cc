# syntax=docker/dockerfile:1
#
# mcp-monitor container image (the DaemonSet in deploy/kubernetes runs it).
#
#   cargo xtask image          # Podman, from a Debian base made with debootstrap
#   docker build -t ghcr.io/mcp-monitor/mcp-monitor:0.1.0 .
#
# The build uses the project's own toolchain recipe (shared/docs/toolchain.md,
# `cargo xtask setup` and `cargo xtask build`), on the same Debian release:
# Debian 12 "bookworm", whose security suite ships rustc-web 1.96 with a
# prebuilt `core` for bpfel-unknown-none (libstd-rust-web-dev-bpf) and LLVM 22.
# No rustup and no nightly: the eBPF programs are built by Debian's rustc,
# linked by bpf-linker 0.13.0 built against LLVM 22, from monitor-user's
# build.rs, and embedded in the one binary.
# x86_64 only, like the agent (build on or for linux/amd64).

ARG DEBIAN_RELEASE=bookworm
# The two bases. The defaults are the public Debian images; `cargo xtask
# image` passes a bookworm base it made itself from Debian's packages
# (debootstrap), for machines that reach Debian's archive but no registry.
ARG BUILD_BASE=debian:${DEBIAN_RELEASE}
ARG RUNTIME_BASE=debian:${DEBIAN_RELEASE}-slim
# Where the binary comes from: `build` (the full build below, the default)
# or `prebuilt` (a binary in the build context, stripped already; what the
# test suite does with the binary it has just built and tested).
ARG BINARY_FROM=build

# ---------------------------------------------------------------- build ---
FROM ${BUILD_BASE} AS build

ARG BPF_LINKER_VERSION=0.13.0
ENV DEBIAN_FRONTEND=noninteractive

# The packages of `cargo xtask setup` that the build needs (bpftool,
# util-linux and curl there serve the benchmarks and tests only), plus
# cargo-web: Debian's cargo for that rustc (the machines of the recipe use
# rustup's cargo for the userspace crates; one Debian toolchain for both
# keeps the image self-contained). rustc-web pulls in gcc and libc6-dev
# (host linker); rustc-web, libstd-rust-web-dev-bpf, cargo-web and
# llvm-22-dev come from bookworm-security, which the debian image enables.
# Versions are not pinned: the archive keeps only the current security
# release of each, so a pin would break the build at the next update.
# hadolint ignore=DL3008
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      rustc-web \
      cargo-web \
      libstd-rust-web-dev-bpf \
      llvm-22-dev \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# bpf-linker against LLVM 22, exactly as `cargo xtask setup` builds it:
# /usr/lib/llvm-22/bin first on PATH, or its build finds LLVM 14's
# llvm-config and fails (`unable to find library -lLLVM`). Installed under
# /opt/mcp-monitor-tools, the image's counterpart of the repository's .tools.
# Done before the sources are copied, so source changes reuse this layer.
#
# Behind a TLS-inspecting proxy, crates.io is reached only when its CA is
# trusted: give it as the optional build secret `build-ca` (PEM; `cargo xtask
# image` passes the host's /usr/local/share/ca-certificates). It is used
# for the downloads of this stage only and is never written into a layer.
RUN --mount=type=secret,id=build-ca,target=/run/secrets/build-ca.pem \
    if [ -s /run/secrets/build-ca.pem ]; then \
      cat /etc/ssl/certs/ca-certificates.crt /run/secrets/build-ca.pem > /tmp/build-ca-bundle.pem \
      && export CARGO_HTTP_CAINFO=/tmp/build-ca-bundle.pem; \
    fi \
 && PATH=/usr/lib/llvm-22/bin:$PATH \
    cargo install "bpf-linker@${BPF_LINKER_VERSION}" --locked \
      --no-default-features --features llvm-22 \
      --root /opt/mcp-monitor-tools \
 && rm -f /tmp/build-ca-bundle.pem \
 && /opt/mcp-monitor-tools/bin/bpf-linker --version

# What monitor-user/build.rs reads to build the kernel programs (it then
# runs `cargo build --release --locked --target bpfel-unknown-none` in
# monitor-ebpf with RUSTC set to this rustc, RUSTC_BOOTSTRAP=1,
# CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER set to this linker,
# CARGO_ENCODED_RUSTFLAGS="-Cdebuginfo=2 -Clink-arg=--btf" and
# /usr/lib/llvm-22/bin on PATH). Both values are its defaults except the
# linker's location; they are spelled out so the image does not depend on
# them.
ENV MCP_MONITOR_BPF_RUSTC=/usr/bin/rustc \
    MCP_MONITOR_BPF_LINKER=/opt/mcp-monitor-tools/bin/bpf-linker

WORKDIR /src
COPY . .

# `cargo xtask build` runs `cargo build --release -p mcp-monitor --bin
# mcp-monitor`; --locked in addition, so the image is built from the
# committed Cargo.lock (build.rs already builds monitor-ebpf with --locked).
# The registry and target caches need BuildKit (or Podman/Buildah); the
# binary is copied out of the cached target directory in the same step,
# without its debug info (the release profile keeps line tables for
# profiling: 97 MB with them, 21 MB without). The symbol table stays, so
# panics still name functions.
RUN --mount=type=cache,target=/root/.cargo/registry \
    --mount=type=cache,target=/src/target \
    --mount=type=secret,id=build-ca,target=/run/secrets/build-ca.pem \
    if [ -s /run/secrets/build-ca.pem ]; then \
      cat /etc/ssl/certs/ca-certificates.crt /run/secrets/build-ca.pem > /tmp/build-ca-bundle.pem \
      && export CARGO_HTTP_CAINFO=/tmp/build-ca-bundle.pem; \
    fi \
 && cargo build --release --locked -p mcp-monitor --bin mcp-monitor \
 && rm -f /tmp/build-ca-bundle.pem \
 && mkdir -p /out \
 && objcopy --strip-debug target/release/mcp-monitor /out/mcp-monitor \
 && chmod 0755 /out/mcp-monitor \
 && /out/mcp-monitor --version

# ------------------------------------------------------------- prebuilt ---
# The build context is a directory holding only a stripped `mcp-monitor`.
FROM scratch AS prebuilt
COPY mcp-monitor /out/mcp-monitor

FROM ${BINARY_FROM} AS binary

# -------------------------------------------------------------- runtime ---
FROM ${RUNTIME_BASE}

# The binary needs glibc and libgcc_s (in the slim image) and nothing else;
# CA certificates for the alert sinks that speak TLS (webhook, syslog).
# hadolint ignore=DL3008
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/*

COPY --from=binary --chmod=0755 /out/mcp-monitor /usr/local/bin/mcp-monitor

# Nothing else is written inside the image: configuration is mounted at
# /etc/mcp-monitor, state goes to /var/lib/mcp-monitor (a host directory in
# the DaemonSet), events and alerts to stdout by default. The image runs
# with a read-only root filesystem.
LABEL org.opencontainers.image.title="mcp-monitor" \
      org.opencontainers.image.description="Host-level monitor for MCP (Model Context Protocol) traffic, captured with eBPF" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

# Root: loading eBPF programs needs CAP_BPF and CAP_PERFMON at least; the
# DaemonSet drops every other capability (deploy/kubernetes/daemonset.yaml).
# hadolint ignore=DL3002
USER 0:0
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/mcp-monitor"]
CMD ["run"]
