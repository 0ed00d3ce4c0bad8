#!/bin/sh
# Vigil's default shutdown action: power this node off. Run by vigil-agent after a
# verified, signed request from the verifier, with the request (JSON) on stdin.
set -eu
systemctl poweroff || poweroff
