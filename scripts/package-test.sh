#!/usr/bin/env bash
# The packages' install test (scripts/test.sh runs it after cargo test; alone:
# `bash scripts/package-test.sh` after `cargo build` or `cargo test`):
#  1. builds the .debs and .rpms from the debug binaries already built (scripts/package.sh
#     --profile dev --no-build; it builds them first if one is missing);
#  2. unpacks the .debs into a scratch root (dpkg-deb -x) and checks the files, the
#     conffiles, and that the maintainer scripts enable and start nothing;
#  3. runs each service package's postinst under DPKG_ROOT=<scratch root> (twice: it is
#     idempotent) against a copy of this machine's passwd and group files: the `vigil`
#     user and /var/lib/vigil are made in the scratch root, not on this machine;
#  4. `systemd-analyze verify` on the units, offline (--root=<scratch root>, with this
#     machine's stock units copied in for the targets they name; no running systemd is
#     needed), any warning failing the test;
#  5. starts each service binary from its packaged configuration the way the unit's
#     ExecStart does (the same command line, its paths under the scratch root), with
#     only what cannot be used here overridden through VIGIL_<SERVICE>_<KEY> variables
#     (state and TLS directories, 127.0.0.1 and free ports, swtpm instead of
#     /dev/tpmrm0); waits for READY=1 on NOTIFY_SOCKET, checks that the agent registers
#     and that `vigil tenant` reaches both services with the packaged tenant.toml, then
#     stops each with SIGTERM and waits for STOPPING=1 and exit status 0;
#  6. runs the disk-image element deploy/dib/vigil-agent against a scratch image tree
#     holding the unpacked agent package, and checks what it wrote, the kernel command
#     line it sets and the runtime policy it makes with `vigil policy create runtime
#     --rootfs`;
#  7. lists the .rpms' files and scripts with `rpm -qlp` when rpm is installed.
#
# --reuse: test the packages already in <target dir>/packages instead of making them.
set -euo pipefail
cd "$(dirname "$0")/.."

reuse=0
case "${1:-}" in
    --reuse) reuse=1 ;;
    "") ;;
    *) echo "usage: $0 [--reuse]" >&2; exit 2 ;;
esac
work="$PWD/.work/package-test"
rm -rf "$work"
mkdir -p "$work"
root="$work/root"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

fail() {
    echo "package-test: FAILED: $*" >&2
    for log in "$work"/*.log; do
        [ -s "$log" ] && { echo "--- $log" >&2; tail -20 "$log" >&2; }
    done
    exit 1
}

target=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
build=(--no-build)
for b in vigil vigil-agent vigil-registrar vigil-verifier; do
    [ -x "$target/debug/$b" ] || build=()
done
out="$target/packages"
if ((reuse)); then
    echo "== packages: those in $out"
else
    echo "== packages (scripts/package.sh --profile dev ${build[*]})"
    bash scripts/package.sh --profile dev "${build[@]}" >"$work/package.log" 2>&1 ||
        fail "scripts/package.sh: $(tail -5 "$work/package.log")"
fi

echo "== unpack into $root"
mkdir -p "$root"
for deb in "$out"/*.deb; do
    dpkg-deb -x "$deb" "$root"
done
expect=(
    usr/bin/vigil usr/bin/vigil-agent usr/bin/vigil-registrar usr/bin/vigil-verifier
    etc/vigil/agent.toml etc/vigil/registrar.toml etc/vigil/verifier.toml etc/vigil/tenant.toml
    usr/lib/systemd/system/vigil-agent.service usr/lib/systemd/system/vigil-registrar.service
    usr/lib/systemd/system/vigil-verifier.service
    usr/share/bash-completion/completions/vigil usr/share/zsh/vendor-completions/_vigil
    usr/share/fish/vendor_completions.d/vigil.fish
    usr/share/man/man1/vigil.1.gz usr/share/man/man1/vigil-tenant-add.1.gz
    usr/share/man/man1/vigil-policy-create-runtime.1.gz
)
for f in "${expect[@]}"; do
    [ -f "$root/$f" ] || fail "$f is not in the packages"
done
for b in vigil vigil-agent vigil-registrar vigil-verifier; do
    [ -x "$root/usr/bin/$b" ] || fail "usr/bin/$b is not executable"
done
grep -q 'complete -F _vigil' "$root/usr/share/bash-completion/completions/vigil" ||
    fail "the bash completion is not one"
for svc in agent registrar verifier; do
    deb=$(echo "$out"/vigil-"$svc"_*.deb)
    ctl="$work/control-$svc"
    dpkg-deb -e "$deb" "$ctl"
    grep -qx "/etc/vigil/$svc.toml" "$ctl/conffiles" || fail "$svc.toml is not a conffile"
    # Nothing enabled or started: the only `enable` restores a state the administrator
    # chose (was-enabled), and nothing is started.
    if grep -q 'deb-systemd-invoke start\|systemctl.* start' "$ctl/postinst"; then
        fail "vigil-$svc's postinst starts its unit"
    fi
    [ "$(grep -c 'deb-systemd-helper enable' "$ctl/postinst")" = "$(grep -c 'was-enabled' "$ctl/postinst")" ] ||
        fail "vigil-$svc's postinst enables its unit"
done
dpkg-deb -f "$(echo "$out"/vigil-agent_*.deb)" Depends | grep -q 'tpm-udev' ||
    fail "vigil-agent does not depend on tpm-udev (the tss group)"
echo "   $(find "$root" -type f | wc -l) files, conffiles and maintainer scripts as expected"

echo "== postinst under DPKG_ROOT (twice)"
mkdir -p "$root/etc"
# This machine's users and groups (so that ids are allocated as they would be here),
# but not its password hashes: empty shadow files.
for f in passwd group login.defs; do
    [ -e "/etc/$f" ] && cp "/etc/$f" "$root/etc/$f"
done
: >"$root/etc/shadow"
: >"$root/etc/gshadow"
for svc in agent registrar verifier agent; do
    # As dpkg runs it (deb-systemd-helper acts only then, under DPKG_ROOT too).
    DPKG_ROOT="$root" DPKG_MAINTSCRIPT_PACKAGE="vigil-$svc" DPKG_MAINTSCRIPT_NAME=postinst \
        sh "$work/control-$svc/postinst" configure >>"$work/postinst.log" 2>&1 ||
        fail "vigil-$svc's postinst"
done
[ "$(grep -c '^vigil:' "$root/etc/passwd")" = 1 ] || fail "no single vigil user in the scratch root"
[ "$(grep -c '^vigil:' "$root/etc/group")" = 1 ] || fail "no single vigil group in the scratch root"
uid=$(awk -F: '$1 == "vigil" { print $3 }' "$root/etc/passwd")
[ "$(stat -c '%u %a' "$root/var/lib/vigil")" = "$uid 750" ] || fail "/var/lib/vigil is not vigil's, mode 0750"
getent passwd vigil >/dev/null 2>&1 && echo "   (this machine has a vigil user of its own)"
[ ! -s "$work/postinst.log" ] || fail "postinst: $(cat "$work/postinst.log")"
echo "   user vigil ($uid), /var/lib/vigil 0750"

echo "== systemd-analyze verify"
cp -an /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
verify=$(systemd-analyze verify --man=no --root="$root" "$root"/usr/lib/systemd/system/vigil-*.service 2>&1) ||
    fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify warns: $verify"
for svc in agent registrar verifier; do
    echo "   vigil-$svc.service: $(systemd-analyze security --offline=yes --root="$root" \
        "$root/usr/lib/systemd/system/vigil-$svc.service" 2>&1 | tail -1 | sed 's/^→ //')"
done

# A free TCP port on 127.0.0.1 (the kernel's pick; free until a service binds it).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A free port whose successor is free too (swtpm's TCTI takes the control port as
# port + 1).
free_port_pair() {
    python3 - <<'PY'
import socket
while True:
    a, b = socket.socket(), socket.socket()
    a.bind(("127.0.0.1", 0))
    port = a.getsockname()[1]
    try:
        b.bind(("127.0.0.1", port + 1))
    except OSError:
        continue
    print(port)
    break
PY
}

# start NAME VAR=VALUE...: runs the unit's ExecStart (every absolute path in it taken
# under the scratch root, /etc/vigil under $etc) with the variables, NOTIFY_SOCKET
# naming a datagram socket that a listener records into $work/NAME.notify; waits for
# READY=1.
etc="$root/etc/vigil"
start() {
    local name=$1 unit cmd=() word
    shift
    unit="$root/usr/lib/systemd/system/$name.service"
    rm -f "$work/$name.sock" "$work/$name.notify"
    for word in $(sed -n 's/^ExecStart=//p' "$unit"); do
        case "$word" in
            /etc/vigil/*) cmd+=("$etc/${word#/etc/vigil/}") ;;
            /*) cmd+=("$root$word") ;;
            *) cmd+=("$word") ;;
        esac
    done
    python3 - "$work/$name.sock" >"$work/$name.notify" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(120)
for _ in range(2):
    print(s.recv(256).decode(), flush=True)
PY
    pids+=($!)
    for _ in $(seq 100); do [ -S "$work/$name.sock" ] && break; sleep 0.1; done
    env "$@" NOTIFY_SOCKET="$work/$name.sock" "${cmd[@]}" >"$work/$name.log" 2>&1 &
    pids+=($!)
    eval "pid_${name//-/_}=$!"
    for _ in $(seq 600); do
        grep -qx 'READY=1' "$work/$name.notify" && return 0
        kill -0 "$!" 2>/dev/null || fail "$name exited before READY=1"
        sleep 0.1
    done
    fail "$name sent no READY=1 in 60 s"
}

# stop NAME: SIGTERM, then STOPPING=1 and exit status 0.
stop() {
    local name=$1 pid
    pid=$(eval echo "\$pid_${name//-/_}")
    kill -TERM "$pid"
    local status=0
    wait "$pid" || status=$?
    [ "$status" = 0 ] || fail "$name exited with $status after SIGTERM"
    for _ in $(seq 50); do grep -qx 'STOPPING=1' "$work/$name.notify" && return 0; sleep 0.1; done
    fail "$name sent no STOPPING=1"
}

vigil="$root/usr/bin/vigil"
"$vigil" ca init --dir "$work/cv_ca" --san localhost --san 127.0.0.1 >"$work/ca.log"

# Every service from the configuration files in $etc, then `vigil tenant` with its
# tenant.toml: the agent registers, `vigil tenant` reaches both services, each stops
# cleanly.
services() {
local run="$work/$1"
mkdir -p "$run"
reg_http=$(free_port)
reg_tls=$(free_port)
start vigil-registrar VIGIL_REGISTRAR_STATE_DIR="$run/registrar" VIGIL_REGISTRAR_TLS_DIR="$work/cv_ca" \
    VIGIL_REGISTRAR_IP=127.0.0.1 VIGIL_REGISTRAR_PORT="$reg_http" VIGIL_REGISTRAR_TLS_PORT="$reg_tls"
echo "   vigil-registrar: READY=1"
ver=$(free_port)
start vigil-verifier VIGIL_VERIFIER_STATE_DIR="$run/verifier" VIGIL_VERIFIER_TLS_DIR="$work/cv_ca" \
    VIGIL_VERIFIER_IP=127.0.0.1 VIGIL_VERIFIER_PORT="$ver"
echo "   vigil-verifier: READY=1"

tpm=$(free_port_pair)
mkdir -p "$run/swtpm"
swtpm socket --tpm2 --tpmstate dir="$run/swtpm" --server type=tcp,port="$tpm",bindaddr=127.0.0.1 \
    --ctrl type=tcp,port="$((tpm + 1))",bindaddr=127.0.0.1 --flags not-need-init,startup-clear \
    >"$work/swtpm.log" 2>&1 &
pids+=($!)
local swtpm=$!
for _ in $(seq 50); do (: <"/dev/tcp/127.0.0.1/$tpm") 2>/dev/null && break; sleep 0.1; done
uuid="package-test-$1-$$"
agent_port=$(free_port)
start vigil-agent VIGIL_AGENT_STATE_DIR="$run/agent" VIGIL_AGENT_TPM_TCTI="swtpm:host=127.0.0.1,port=$tpm" \
    VIGIL_AGENT_TRUSTED_CLIENT_CA="$work/cv_ca/cacert.crt" VIGIL_AGENT_UUID="$uuid" \
    VIGIL_AGENT_IP=127.0.0.1 VIGIL_AGENT_PORT="$agent_port" VIGIL_AGENT_CONTACT_PORT="$agent_port" \
    VIGIL_AGENT_REGISTRAR_PORT="$reg_http" VIGIL_AGENT_OPS_PORT=0
echo "   vigil-agent: READY=1"

# The tenant.toml, as a user's file, with the test's TLS directory and ports.
mkdir -p "$work/xdg/vigil"
cp "$etc/tenant.toml" "$work/xdg/vigil/tenant.toml"
tenant() {
    env XDG_CONFIG_HOME="$work/xdg" VIGIL_TENANT_TLS_DIR="$work/cv_ca" \
        VIGIL_TENANT_REGISTRAR_PORT="$reg_tls" VIGIL_TENANT_VERIFIER_PORT="$ver" "$vigil" tenant "$@"
}
registered=
for _ in $(seq 300); do
    if tenant reglist >"$work/reglist.out" 2>&1 && grep -q "$uuid" "$work/reglist.out"; then
        registered=1
        break
    fi
    sleep 0.2
done
[ -n "$registered" ] || fail "the agent did not register: $(cat "$work/reglist.out")"
echo "   the agent registered ($uuid, vigil tenant reglist)"
tenant list >"$work/list.out" 2>&1 || fail "vigil tenant list: $(cat "$work/list.out")"
echo "   vigil tenant list reaches the verifier"
for s in vigil-agent vigil-verifier vigil-registrar; do
    stop "$s"
done
echo "   each stopped on SIGTERM: STOPPING=1, exit status 0"
kill "$swtpm"
wait "$swtpm" 2>/dev/null || true
}

echo "== services from their packaged configurations"
services packaged
# The commented defaults must be right too: the same again with every commented
# `# key = value` line (and table header) of the four files uncommented.
etc="$work/etc-uncommented"
mkdir -p "$etc"
for f in agent registrar verifier tenant; do
    sed -E 's/^# ([a-z_]+ = .*|\[\[[a-z_]+\]\])$/\1/' "$root/etc/vigil/$f.toml" >"$etc/$f.toml"
done
echo "== services from their configurations with every default uncommented"
services uncommented

echo "== disk-image element deploy/dib/vigil-agent"
element=deploy/dib/vigil-agent
image="$work/image"
hooks="$work/hooks"
mkdir -p "$image" "$hooks"
agent_deb=$(echo "$out"/vigil-agent_*.deb)
TMP_HOOKS_PATH="$hooks" DIB_VIGIL_AGENT_PACKAGE="$agent_deb" DIB_VIGIL_CA_CERT="$work/cv_ca/cacert.crt" \
    "$element/extra-data.d/50-vigil-agent"
[ -f "$hooks/vigil-agent/$(basename "$agent_deb")" ] && [ -f "$hooks/vigil-agent/cacert.crt" ] ||
    fail "extra-data.d did not copy the package and the CA certificate"
# What diskimage-builder does before install.d: the package installed (here unpacked),
# install-static's copy of static/.
dpkg-deb -x "$agent_deb" "$image"
cp -a "$element/static/." "$image/"
DIB_VIGIL_ROOT="$image" TMP_HOOKS_PATH="$hooks" "$element/install.d/50-vigil-agent" >"$work/element.log" 2>&1 ||
    fail "install.d: $(cat "$work/element.log")"
[ -L "$image/etc/systemd/system/multi-user.target.wants/vigil-agent.service" ] ||
    fail "install.d did not enable vigil-agent.service"
grep -qx 'Environment=VIGIL_AGENT_UUID=%m' "$image/etc/systemd/system/vigil-agent.service.d/50-machine-id.conf" ||
    fail "install.d did not set the agent's id to the machine id"
cmp -s "$image/etc/vigil/cacert.crt" "$work/cv_ca/cacert.crt" || fail "install.d did not install the CA certificate"
grep -q '^measure func=BPRM_CHECK mask=MAY_EXEC$' "$image/etc/ima/ima-policy" || fail "no IMA policy in the image"
cmdline=$(env -i bash -c ". $element/environment.d/50-vigil-agent.bash; echo \"\$DIB_BOOTLOADER_DEFAULT_CMDLINE\"")
[ "$cmdline" = "nofb nomodeset gfxpayload=text ima_policy=tcb ima_template=ima-ng ima_hash=sha256" ] ||
    fail "kernel command line: '$cmdline'"
TARGET_ROOT="$image" DIB_VIGIL_RUNTIME_POLICY="$work/image-policy.json" DIB_VIGIL_CLI="$vigil" \
    "$element/cleanup.d/90-vigil-runtime-policy" >>"$work/element.log" 2>&1 ||
    fail "cleanup.d: $(cat "$work/element.log")"
digest=$(sha256sum "$image/usr/bin/vigil-agent" | cut -d' ' -f1)
python3 - "$work/image-policy.json" "$digest" <<'PY' || fail "the image's runtime policy lacks /usr/bin/vigil-agent"
import json, sys
policy = json.load(open(sys.argv[1]))
assert sys.argv[2] in policy["digests"]["/usr/bin/vigil-agent"], policy["digests"].keys()
PY
# The unit with the element's drop-in, verified as in the packages' tree (after the
# policy, which should not list this machine's units).
cp -an /usr/lib/systemd/system/. "$image/usr/lib/systemd/system/"
verify=$(systemd-analyze verify --man=no --root="$image" "$image/usr/lib/systemd/system/vigil-agent.service" 2>&1) ||
    fail "systemd-analyze verify (image): $verify"
[ -z "$verify" ] || fail "systemd-analyze verify (image) warns: $verify"
echo "   enabled unit, machine-id drop-in (verified), CA certificate, IMA policy, kernel command line," \
    "runtime policy ($(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["digests"]))' \
    "$work/image-policy.json") paths)"

if ! compgen -G "$out/*.rpm" >/dev/null; then
    echo "SKIPPED: package-test: no .rpm in $out (made with --no-rpm)"
elif command -v rpm >/dev/null 2>&1; then
    echo "== rpm"
    for r in "$out"/*.rpm; do
        rpm -qlp "$r" >"$work/rpm.out" 2>/dev/null || fail "rpm -qlp $r"
        echo "   $(basename "$r"): $(wc -l <"$work/rpm.out") files"
    done
    rpm -qp --scripts "$(echo "$out"/vigil-agent-[0-9]*.rpm)" 2>/dev/null | grep -q useradd ||
        fail "vigil-agent's rpm has no user-creating scriptlet"
    rpm -qlp "$(echo "$out"/vigil-agent-[0-9]*.rpm)" 2>/dev/null | grep -qx /usr/lib/systemd/system/vigil-agent.service ||
        fail "vigil-agent's rpm has no unit"
else
    echo "SKIPPED: package-test: rpm is not installed (Debian package rpm): .rpms built, not inspected"
fi
# The unpacked trees hold every binary again: gone once passed (logs stay).
rm -rf "$root" "$image"
echo "package-test: every check passed"
