#!/usr/bin/env bash
# Runs every test of mailferry (the README's second command; `.ci/run` ends with it).
#
# On a fresh Debian machine with only the Rust toolchain it first installs what the tests
# need and the machine lacks:
#   dovecot-core, dovecot-imapd  the IMAP source tests and the benchmark tests start
#                                scratch Dovecot servers (and stop them) themselves
#   isync                        mbsync: `mailferry bench --compare mbsync` and its test
#                                pull the same mail from the same scratch Dovecot
#   openssl                      the certificate-pinning test makes a certificate with it,
#                                and tests/services/services.sh the test PostgreSQL's CA
#   chromium, nodejs, npm        the wizard's browser test: node runs playwright-core
#                                (tests/browser), which drives chromium
#   postgresql                   the scale-out tests (issue 20): a throwaway cluster
#                                (initdb + pg_ctl in a temp dir, never the system service)
#   python3-pip                  to install moto[server] from PyPI: the S3-compatible
#                                server of the object-storage volume tests
# with apt-get, as root or through sudo. Then it installs playwright-core from
# tests/browser/package-lock.json and moto, starts PostgreSQL and moto on free loopback
# ports (tests/services/services.sh; stopped again when this script exits, however it
# exits) and runs `cargo test --workspace`.
#
#   ./test.sh                  install what is missing, then run every test
#   ./test.sh batch            ... only the tests whose name contains "batch" (arguments
#                              go to cargo test)
#   ./test.sh --install-only   install what is missing and stop (.ci/run does this before
#                              its benchmark smoke runs, which start Dovecot too)
set -euo pipefail
cd "$(dirname "$0")"

# Debian keeps dovecot and doveadm in /usr/sbin, which a normal user's PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# The Debian packages the tests need that this machine does not have yet.
missing_packages() {
    local need=()
    { command -v dovecot && command -v doveadm; } >/dev/null || need+=(dovecot-core)
    [ -x /usr/lib/dovecot/imap ] || need+=(dovecot-imapd)
    command -v mbsync >/dev/null || need+=(isync)
    command -v openssl >/dev/null || need+=(openssl)
    # tests/browser.rs runs Debian's chromium unless MF_CHROMIUM names another.
    [ -x "${MF_CHROMIUM:-/usr/bin/chromium}" ] || need+=(chromium)
    # Only when absent: apt's npm conflicts with a node installed from elsewhere (nvm,
    # NodeSource), which brings its own npm.
    command -v node >/dev/null || need+=(nodejs)
    command -v npm >/dev/null || need+=(npm)
    { command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || need+=(postgresql)
    command -v pip3 >/dev/null || python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
    echo "${need[@]}"
}

install_packages() { # packages...
    # sudo drops the environment, so DEBIAN_FRONTEND goes on the command line.
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then
            apt=(sudo "${apt[@]}")
        else
            echo "test.sh: missing Debian packages $*: install them as root" \
                "(apt-get install $*), or install sudo" >&2
            exit 1
        fi
    fi
    echo "== installing $* (${apt[*]})"
    if ! { "${apt[@]}" update -qq &&
        "${apt[@]}" install -y -qq "$@" </dev/null >/dev/null; }; then
        echo "test.sh: could not install the Debian packages $*; install them" \
            "(apt-get install $*) and run ./test.sh again" >&2
        exit 1
    fi
}

echo "== system packages"
read -r -a need <<<"$(missing_packages)"
if ((${#need[@]})); then
    install_packages "${need[@]}"
fi

echo "== browser test dependencies (playwright-core, from tests/browser/package-lock.json)"
npm ci --prefix tests/browser --no-audit --no-fund

echo "== S3-compatible test server (moto[server], from PyPI)"
if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
    # Debian's own python3 marks itself externally managed; the tests only need moto in it.
    python3 -m pip install -q 'moto[server]>=5,<6' ||
        python3 -m pip install -q --break-system-packages 'moto[server]>=5,<6'
fi

if [ "${1:-}" = --install-only ]; then
    exit 0
fi

# Everything the tests need is installed now: a test that finds no Dovecot or chromium
# fails instead of skipping (the tests skip only outside CI, for a quick local run).
export CI="${CI:-1}"

echo "== PostgreSQL and S3 servers for the scale-out tests"
services_dir=$(mktemp -d "${TMPDIR:-/tmp}/mailferry-services.XXXXXX")
trap 'tests/services/services.sh stop "$services_dir"; rm -rf "$services_dir"' EXIT
eval "$(tests/services/services.sh start "$services_dir")"

echo "== cargo test --workspace"
cargo test --workspace "$@"
