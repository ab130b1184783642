#!/usr/bin/env bash
# `make xen-ci`: boot each Debian Xen (4.17, 4.20) + its dom0 under QEMU (TCG) and run the real-Xen tests in dom0.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 ci/xen/xenci.py "$@"
