#!/usr/bin/env bash
# Throwaway PostgreSQL cluster and S3-compatible server for the scale-out tests (issue 20).
#
#   tests/services/services.sh start DIR   start both under DIR (a fresh directory), print
#                                          `export` lines for the tests' environment
#   tests/services/services.sh stop DIR    stop what `start DIR` started
#
# PostgreSQL is Debian's (`initdb` + `pg_ctl` in DIR/pg on a free loopback port, trust
# authentication for the one user `mailferry`, never the system service). As root it runs
# as the `postgres` user the package creates, since initdb refuses root. The S3 server is
# moto in server mode (PyPI `moto[server]`), on a free loopback port, with its test
# credentials. The cluster speaks TLS too (`ssl = on`, a CA and a server certificate
# for 127.0.0.1 and localhost made here with the openssl CLI; plain connections keep
# working), and pg_hba refuses clear-text connections of the role `mailferry_tls` (the
# tests that prove a worker used TLS create and use it). The tests read:
#   MAILFERRY_TEST_PG   postgres://mailferry@127.0.0.1:PORT/postgres (tests create their
#                       own databases in it)
#   MAILFERRY_TEST_PG_CA  the PEM file of the CA that signed the server's certificate
#   MAILFERRY_TEST_S3   http://127.0.0.1:PORT (tests create their own buckets)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION   moto's defaults
set -euo pipefail

cmd=${1:?usage: services.sh start|stop DIR}
dir=${2:?usage: services.sh start|stop DIR}

pg_bin() {
    local b
    for b in /usr/lib/postgresql/*/bin; do [ -x "$b/pg_ctl" ] && { echo "$b"; return; }; done
    dirname "$(command -v pg_ctl)"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

as_pg() { # command...: as the postgres user when root (initdb refuses root)
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

make_tls() { # DIR: a CA and a server certificate for 127.0.0.1/localhost, in DIR
    local d=$1
    mkdir -p "$d"
    (
        cd "$d"
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout ca.key -out ca.pem -days 30 -subj "/CN=mailferry test PostgreSQL CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout server.key -out server.csr -subj "/CN=localhost"
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 8)" \
            -days 30 -extfile server.ext -out server.crt
        rm -f server.csr server.ext ca.key
        chmod 600 server.key
    ) >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; echo "services.sh: making the test certificates failed (log above)" >&2; exit 1; }
}

start() {
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local bin pgport s3port
    bin=$(pg_bin)
    pgport=$(free_port)
    mkdir -p "$dir/pg"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir" "$dir/pg"
    as_pg "$bin/initdb" -D "$dir/pg/data" -U mailferry --auth=trust -E UTF8 --no-locale >"$dir/pg/initdb.log" 2>&1 ||
        { cat "$dir/pg/initdb.log" >&2; echo "services.sh: initdb failed (log above)" >&2; exit 1; }
    make_tls "$dir/pg/tls"
    [ "$(id -u)" -eq 0 ] && chown -R postgres "$dir/pg/tls"
    # First match wins: the TLS tests' role may only come in over TLS.
    local hba="$dir/pg/data/pg_hba.conf"
    { echo "hostnossl all mailferry_tls 0.0.0.0/0 reject"; echo "hostnossl all mailferry_tls ::/0 reject"; cat "$hba"; } >"$hba.new"
    mv "$hba.new" "$hba"
    [ "$(id -u)" -eq 0 ] && chown postgres "$hba"
    # Enough connections for several workers, each with a pool, plus the tests' own.
    as_pg "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 60 \
        -o "-p $pgport -k $dir/pg -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on -c ssl=on -c ssl_cert_file=$dir/pg/tls/server.crt -c ssl_key_file=$dir/pg/tls/server.key" \
        start >/dev/null ||
        { cat "$dir/pg/server.log" >&2; echo "services.sh: PostgreSQL did not start (log above)" >&2; exit 1; }

    s3port=$(free_port)
    python3 -m moto.server -H 127.0.0.1 -p "$s3port" >"$dir/moto.log" 2>&1 &
    echo $! >"$dir/moto.pid"
    local i
    for i in $(seq 1 100); do
        if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$s3port/')" 2>/dev/null; then
            break
        fi
        if ! kill -0 "$(cat "$dir/moto.pid")" 2>/dev/null; then
            cat "$dir/moto.log" >&2; echo "services.sh: moto server exited (log above)" >&2; exit 1
        fi
        sleep 0.2
    done
    echo "export MAILFERRY_TEST_PG=postgres://mailferry@127.0.0.1:$pgport/postgres"
    echo "export MAILFERRY_TEST_PG_CA=$dir/pg/tls/ca.pem"
    echo "export MAILFERRY_TEST_S3=http://127.0.0.1:$s3port"
    echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1"
}

stop() {
    [ -d "$dir" ] || return 0
    if [ -f "$dir/moto.pid" ]; then
        kill "$(cat "$dir/moto.pid")" 2>/dev/null || true
        rm -f "$dir/moto.pid"
    fi
    if [ -d "$dir/pg/data" ]; then
        as_pg "$(pg_bin)/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

case $cmd in
start) start ;;
stop) stop ;;
*) echo "usage: services.sh start|stop DIR" >&2; exit 2 ;;
esac
