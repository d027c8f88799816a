#!/usr/bin/env bash
# The project's test command (README "Quick start"; `.ci/run` calls exactly this): installs the
# external tools the tests drive when they are missing, then runs the whole suite.
#
#   avrdude, srecord (srec_cat)  AVR interop and image checks      tests/avrdude_interop.rs, tests/build.rs
#   openocd                      drives the simulated STM32F103     tests/stm32_openocd.rs
#   stlink-tools (st-flash)      the ST-Link fallback's real binary
#   postgresql                   throwaway clusters for the records tests (initdb, pg_ctl)
#   chromium, chromium-driver    the dashboard end-to-end tests
#
# As root it installs them with apt-get; otherwise it prints the exact apt-get line and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v avrdude      >/dev/null || need+=(avrdude)
command -v srec_cat     >/dev/null || need+=(srecord)
command -v openocd      >/dev/null || need+=(openocd)
command -v st-flash     >/dev/null || need+=(stlink-tools)
command -v chromium     >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "tests/run.sh: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "tests/run.sh: the tests need: ${need[*]}" >&2
    echo "  install them with:  sudo apt-get install -y ${need[*]}" >&2
    exit 2
  fi
fi

exec cargo test --release "$@"
