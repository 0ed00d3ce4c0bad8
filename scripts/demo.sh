#!/usr/bin/env bash
# The main job: installs what is needed, builds Vigil and runs the local demo.
#
# A whole attestation deployment on this machine, every process in the background:
# a swtpm manufactured with an EK certificate from a local CA, vigil-registrar,
# vigil-verifier (SQLite) and vigil-agent measuring a small directory of files into
# PCR 10 (IMA emulation). The tenant makes a runtime policy from the node's IMA log,
# enrols the node (EK certificate checked against the swtpm's CA) and waits until the
# verifier attests it; then one measured file is tampered with and the demo waits until
# the verifier refuses the node, naming the file.
#
# Exit 0 only when both verdicts were seen. Everything lives in .work/demo/ (wiped at
# start, logs kept there after the run); every process is killed by its PID on exit.
# VIGIL_DEMO_TIMEOUT (seconds, default 90) bounds each wait.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=$root/.work/demo
timeout=${VIGIL_DEMO_TIMEOUT:-90}
node=d432fbb3-d2f1-4a97-9ef7-75bd81c00000

step() { printf '\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }

# A previous run killed with SIGKILL could not clean up: stop its processes, by the PIDs
# it recorded, if they are still the programs it started.
if [ -d "$state/pids" ]; then
    for f in "$state"/pids/*; do
        [ -e "$f" ] || continue
        pid=$(cat "$f")
        if grep -qa -- "$(basename "$f")" "/proc/$pid/cmdline" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
fi

bash scripts/setup.sh
step "Building vigil, vigil-registrar, vigil-verifier, vigil-agent (release)"
cargo build --release --locked -q -p vigil-cli -p vigil-registrar -p vigil-verifier -p vigil-agent
bin=$root/target/release
vigil=$bin/vigil
start_time=$(date +%s)

rm -rf "$state"
mkdir -p "$state/pids" "$state/logs"
pids=()
cleanup() {
    local rc=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$state/pids"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# fail MESSAGE: the reason, then the end of every log.
fail() {
    printf '\ndemo: FAILED: %s\n' "$*" >&2
    for log in "$state"/logs/*.log; do
        printf '\n--- %s (last 15 lines)\n' "${log#"$root"/}" >&2
        tail -n 15 "$log" >&2
    done
    exit 1
}

# spawn NAME COMMAND...: runs COMMAND in the background, output to logs/NAME.log.
spawn() {
    local name=$1
    shift
    "$@" >"$state/logs/$name.log" 2>&1 &
    pids+=($!)
    echo $! >"$state/pids/$(basename "$1")"
}

# free_ports N: N free TCP ports on 127.0.0.1, the first one with a free neighbour
# (swtpm's control channel is its port + 1).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); held.append(s)
    p = s.getsockname()[1]
    if not ports and (p >= 65535 or not free(p + 1)):
        continue
    ports.append(p)
print(*ports)
EOF
}

# wait_port PORT NAME: until something listens on PORT.
wait_port() {
    local deadline=$((SECONDS + 30))
    until python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1" 2>/dev/null; do
        ((SECONDS < deadline)) || fail "$2 did not listen on port $1 within 30 s"
        sleep 0.1
    done
}

read -r tpm_port reg_port reg_tls_port ver_port agent_port <<<"$(free_ports 5)"

step "Control plane: a CA for mTLS, a registrar and a verifier (SQLite)"
"$vigil" ca init --dir "$state/cv_ca" >/dev/null
cat >"$state/registrar.toml" <<EOF
port = $reg_port
tls_port = $reg_tls_port
state_dir = "$state/registrar"
tls_dir = "$state/cv_ca"
EOF
cat >"$state/verifier.toml" <<EOF
port = $ver_port
state_dir = "$state/verifier"
tls_dir = "$state/cv_ca"
quote_interval = 1.0
retry_interval = 1.0
EOF
mkdir -p "$state/registrar" "$state/verifier"
spawn registrar "$bin/vigil-registrar" --config "$state/registrar.toml"
spawn verifier "$bin/vigil-verifier" --config "$state/verifier.toml"
note "registrar on 127.0.0.1:$reg_port (agents) and :$reg_tls_port (mTLS), verifier on :$ver_port"

step "A node: swtpm manufactured with an EK certificate, vigil-agent measuring files"
tpm=$state/swtpm
mkdir -p "$tpm/state" "$tpm/localca" "$state/tpm_cert_store"
cat >"$tpm/localca.conf" <<EOF
statedir = $tpm/localca
signingkey = $tpm/localca/signkey.pem
issuercert = $tpm/localca/issuercert.pem
certserial = $tpm/localca/certserial
EOF
printf -- '--platform-manufacturer Vigil\n--platform-version 2.1\n--platform-model demo\n' \
    >"$tpm/localca.options"
cat >"$tpm/swtpm_setup.conf" <<EOF
create_certs_tool = swtpm_localca
create_certs_tool_config = $tpm/localca.conf
create_certs_tool_options = $tpm/localca.options
active_pcr_banks = sha256
EOF
swtpm_setup --tpm2 --tpmstate "$tpm/state" --create-ek-cert --create-platform-cert \
    --overwrite --config "$tpm/swtpm_setup.conf" >"$state/logs/swtpm_setup.log" 2>&1 ||
    fail "swtpm_setup could not manufacture the TPM"
# The verifier side trusts the manufacturer's CA certificates only (not its keys).
cp "$tpm/localca/issuercert.pem" "$state/tpm_cert_store/demo-issuer.pem"
cp "$tpm/localca/swtpm-localca-rootca-cert.pem" "$state/tpm_cert_store/demo-root.pem"
spawn swtpm swtpm socket --tpm2 --server "type=tcp,port=$tpm_port,bindaddr=127.0.0.1" \
    --ctrl "type=tcp,port=$((tpm_port + 1)),bindaddr=127.0.0.1" \
    --tpmstate "dir=$tpm/state" --flags not-need-init,startup-clear
# Probe the control channel: swtpm serves one connection on its TPM port.
wait_port $((tpm_port + 1)) swtpm

# The files the node measures: a few programs and a configuration file.
files=$state/node-files
mkdir -p "$files"
for tool in ls cat sh; do cp "$(command -v $tool)" "$files/$tool"; done
printf '#!/bin/sh\necho "backup done"\n' >"$files/backup.sh"
printf 'PermitRootLogin no\n' >"$files/sshd_config"
cat >"$state/agent.toml" <<EOF
uuid = "$node"
port = $agent_port
contact_port = $agent_port
registrar_port = $reg_port
tpm_tcti = "swtpm:host=127.0.0.1,port=$tpm_port"
state_dir = "$state/agent"
trusted_client_ca = ["$state/cv_ca/cacert.crt"]
ima_emulate = ["$files"]
ima_emulate_interval = 1
EOF
mkdir -p "$state/agent"
wait_port "$reg_port" registrar
wait_port "$reg_tls_port" registrar
wait_port "$ver_port" verifier
spawn agent "$bin/vigil-agent" --config "$state/agent.toml"
note "swtpm on 127.0.0.1:$tpm_port, agent $node on :$agent_port, measuring $(ls "$files" | wc -l) files"

tenant=("$vigil" tenant --tls-dir "$state/cv_ca" --verifier-port "$ver_port"
    --registrar-port "$reg_tls_port" --state-dir "$state")

# The node registers in the background; the tenant needs its record.
deadline=$((SECONDS + timeout))
until "${tenant[@]}" regstatus -u "$node" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "the agent did not register within $timeout s"
    sleep 0.5
done
note "the agent registered and activated its AK with the registrar"

step "Runtime policy from the node's IMA log, then enrolment"
log=$state/agent/ima_emulated_measurements
"$vigil" policy create runtime -m "$log" -o "$state/runtime-policy.json" \
    >"$state/logs/policy-create.log" 2>&1 || fail "vigil policy create runtime failed"
note "runtime-policy.json: $(grep -c . "$log") log entries -> $(python3 -c \
    'import json,sys; print(len(json.load(open(sys.argv[1]))["digests"]))' \
    "$state/runtime-policy.json") allowed digests"
"${tenant[@]}" add -u "$node" --runtime-policy "$state/runtime-policy.json" \
    --tpm-cert-store "$state/tpm_cert_store" >"$state/logs/tenant-add.log" 2>&1 ||
    fail "vigil tenant add failed: $(tail -n 3 "$state/logs/tenant-add.log")"
note "enrolled: identity quote and EK certificate checked, node handed to the verifier"

# status_fields FIELD...: fields of the node's status object, tab-separated.
status_fields() {
    "${tenant[@]}" status -u "$node" --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
s = next(iter(s.values()))
v = [s.get(k, "") for k in sys.argv[1:]]
print("\t".join(x if isinstance(x, str) else json.dumps(x) for x in v))' "$@"
}

step "Waiting for the verifier to attest the node"
deadline=$((SECONDS + timeout))
while :; do
    IFS=$'\t' read -r op count < <(status_fields operational_state attestation_count) || true
    [ "$op" = "Get Quote" ] && [ "${count:-0}" -ge 2 ] && break
    ((SECONDS < deadline)) || fail "not attested within $timeout s (state '$op', count '$count')"
    sleep 0.5
done
"${tenant[@]}" status -u "$node" | sed 's/^/   /'
printf '\033[1;32m-> verdict 1: the node is trusted (%s quotes verified)\033[0m\n' "$count"

target=$files/backup.sh
step "Tampering: appending a byte to $target"
printf '#' >>"$target"
note "the agent re-measures its files every second and extends PCR 10 with the new digest"
deadline=$((SECONDS + timeout))
while :; do
    IFS=$'\t' read -r op < <(status_fields operational_state) || true
    case "$op" in "Invalid Quote" | Failed | "Tenant Quote Failed") break ;; esac
    ((SECONDS < deadline)) || fail "the tampering was not detected within $timeout s (state '$op')"
    sleep 0.5
done
"${tenant[@]}" status -u "$node" | sed 's/^/   /'
# Keylime's runtime_policy_hash event carries the digest the node measured ("got"), not
# the path: the node's IMA log, which the verifier replayed, names the file.
got=$(status_fields vigil | python3 -c '
import json, sys
v = json.load(sys.stdin)
print(*[e["context"]["got"] for e in v["last_failures"]
        if e["event_id"] == "ima.validation.ima-ng.runtime_policy_hash"][:1])') ||
    fail "the node failed, but not with ima.validation.ima-ng.runtime_policy_hash"
file=$(awk -v d="sha256:$got" '$4 == d { print $5 }' "$log" | tail -n 1)
note "the refused digest $got is, in the node's IMA log, $file"
[ -n "$got" ] && [ "$file" = "$target" ] ||
    fail "the node failed, but not on the tampered file (digest '$got', file '$file')"
printf '\033[1;31m-> verdict 2: the node is refused (%s): %s no longer matches its runtime policy\033[0m\n' \
    "$op" "$target"
printf '\ndemo: both verdicts as expected, in %s s; logs in %s\n' \
    "$(($(date +%s) - start_time))" "${state#"$root"/}/logs"
