#!/usr/bin/env bash
# Installs the Debian packages the lab needs, only those missing: Redis, a JDK (Kafka runs
# on it), Maven (resolves Kafka's jars), python3-venv, Node.js + npm (bull-board, the
# shared-format check), Chromium (the dashboard's browser test).
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# Node reads the BullMQ queue in a test (format shared with Python) and runs bull-board.
command -v npm >/dev/null || need+=(nodejs npm)
if [ "${LABKIT_WITH_BROWSER:-1}" = 1 ]; then
  command -v chromium >/dev/null || need+=(chromium)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing: ${need[*]} — install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing ${need[*]} (apt-get)…"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
