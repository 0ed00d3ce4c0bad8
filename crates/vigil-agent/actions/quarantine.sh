#!/bin/sh
# Vigil's default quarantine action: drop every network connection of this node except
# to its control plane (the verifier and registrar addresses in VIGIL_CONTROL_PLANE,
# space-separated). Run by vigil-agent after a verified, signed request from the
# verifier, with the request (JSON) on stdin. Uses nftables.
set -eu
nft add table inet vigil_quarantine
nft add chain inet vigil_quarantine out '{ type filter hook output priority 0; policy drop; }'
nft add chain inet vigil_quarantine in '{ type filter hook input priority 0; policy drop; }'
nft add rule inet vigil_quarantine out oif lo accept
nft add rule inet vigil_quarantine in iif lo accept
for addr in ${VIGIL_CONTROL_PLANE:-}; do
    nft add rule inet vigil_quarantine out ip daddr "$addr" accept
    nft add rule inet vigil_quarantine in ip saddr "$addr" accept
done
