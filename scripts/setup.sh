#!/usr/bin/env bash
# Installs what Vigil's build, tests and demo need on Debian, idempotently.
# Safe to run repeatedly: it only calls apt-get when a package is missing.
set -euo pipefail

# libefivar1: Keylime's event-log parser (measured-boot differential tests). cpio and the
# compressors: the initrds of the policy-creation differential tests (Keylime unpacks them
# with these tools). openssl: the OpenSSL node of vigil-tls's TLS resumption test. curl: a
# client of the agent's identity socket running as another user (vigil-agent's socket test).
# protobuf-compiler: protoc, for vigil-spire's generated gRPC code (SPIRE's plugin protos).
# python3-psycopg2: Keylime's services on PostgreSQL (the Keylime database import test).
# systemd (systemd-analyze) and rpm: scripts/package-test.sh verifies the units offline
# and lists the .rpms' files.
PACKAGES=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config python3 python3-venv python3-gpg
    libefivar1 cpio gzip xz-utils zstd lz4 bzip2 openssl curl protobuf-compiler python3-psycopg2
    systemd rpm)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

# scripts/test.sh's supply-chain check (deny.toml). Built from crates.io once: about
# 5 minutes on 2 cores.
if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "setup: installing cargo-deny"
    cargo install --locked cargo-deny@0.20.2
fi

# vigil-store's tests also run on PostgreSQL; under CI=true a missing server fails them.
if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
    :
elif [ -z "${VIGIL_TEST_DATABASE_URL:-}" ]; then
    echo "setup: note: no PostgreSQL on 127.0.0.1:5432 (trust auth, database test);" \
        "the store's PostgreSQL tests will skip (fail under CI) unless VIGIL_TEST_DATABASE_URL is set" >&2
fi
