#!/usr/bin/env bash
# Services the tests need, from Debian's packages. The tests start their own server instances
# (tests/tuner/conftest.py runs a PostgreSQL server in a temp dir on a free loopback port).
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing postgresql (Debian package) for the HyperTuner shared-study test"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends postgresql
fi
ls -d /usr/lib/postgresql/*/bin
