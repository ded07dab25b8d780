#!/bin/sh
# Scale figures of the shard and LMDB stores on tiny samples (one u1 [8]
# tensor): import rate and writer heap, disk per sample, `get`/`info`
# through the CLI (time and peak RSS) and `serve` requests/s, at 100 k, 1 M
# and 10 M samples, both backends in the same run. See benches/scale.py.
#
#   benches/scale.sh [WORKDIR [COUNT ...]]     # default: /tmp/tenstore-scale
#
# Needs about 7 GB free in WORKDIR at 10 M samples, /usr/bin/time, and a
# Python with pyzmq (TENSTORE_PYTHON, default .venv/bin/python).
set -eu
cd "$(dirname "$0")/.."
cargo build --release --bin tenstore --example scale_gen
work="${1:-/tmp/tenstore-scale}"
[ $# -gt 0 ] && shift
python="${TENSTORE_PYTHON:-.venv/bin/python}"
exec "$python" benches/scale.py target/release/tenstore target/release/examples/scale_gen "$work" "$@"
