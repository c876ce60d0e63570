#!/usr/bin/env bash
# The test command: installs or starts what the tests need, then runs `cargo test --workspace`
# (extra arguments go to cargo test, e.g. `scripts/test.sh --test faults_fetch`).
#
# The tests need PostgreSQL on 127.0.0.1:5432 (user postgres without a password, database
# `test`), RabbitMQ on 127.0.0.1:5672 (guest/guest), Chromium with chromedriver (the ratings
# page's browser test) and, for .ci/run, docker-compose. What is missing is installed with apt;
# what is installed but down is started. Machines that already run these services can use
# `cargo test --workspace` directly (HASHTALE_TEST_DATABASE_URL and HASHTALE_TEST_AMQP_URL point
# the tests elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# PostgreSQL.
if ! command -v pg_ctlcluster >/dev/null; then
  echo "installing PostgreSQL"
  apt_install postgresql
  # A fresh cluster asks for passwords on TCP; the tests connect as postgres without one.
  hba="$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)"
  sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi

# RabbitMQ.
if ! command -v rabbitmq-server >/dev/null; then
  echo "installing RabbitMQ"
  apt_install rabbitmq-server
fi
if ! port_open 5672; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached
fi

for _ in $(seq 1 60); do
  if pg_isready -q -h 127.0.0.1 -p 5432 && port_open 5672; then
    break
  fi
  sleep 2
done
pg_isready -h 127.0.0.1 -p 5432
port_open 5672 || { echo "RabbitMQ is not reachable on 5672"; exit 1; }

# The test database (only for the default URL; a custom one is the caller's to provide).
if [ -z "${HASHTALE_TEST_DATABASE_URL:-}" ]; then
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
    echo "creating database test"
    createdb -h 127.0.0.1 -U postgres test
  fi
fi

# The ratings page is tested in a real headless Chromium (api/tests/ratings_browser.rs).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "installing chromium and chromium-driver"
  apt_install chromium chromium-driver
fi

# The compose file is validated by Debian's docker-compose in .ci/run (no images are pulled).
if ! command -v docker-compose >/dev/null; then
  echo "installing docker-compose"
  apt_install docker-compose
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/hashtale-target}"
cargo test --workspace "$@"
