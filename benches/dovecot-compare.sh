#!/usr/bin/env bash
# Peer figures for mailferry's benchmarks: Dovecot's `doveadm backup` of a Maildir into mdbox,
# once with mail_crypt (global EC keys, encrypted at rest) and once without, on this machine.
#
#   benches/dovecot-compare.sh MAILDIR WORKDIR
#
# MAILDIR is read only: each run works on its own copy under WORKDIR (Dovecot moves new/ to
# cur/ and writes index files in the Maildir it reads). Copies are made and flushed before
# the clock starts; each timed run ends by syncing every file and directory of the mdbox it
# wrote (fdatasync each, like mailferry's group commits), so its figure is durable like ours.
# Not a global `sync`: on a shared machine that would also time everyone else's dirty pages.
# Needs dovecot-core (`apt-get install -y dovecot-core`) and openssl. Runs as any user; as
# root, doveadm runs as `nobody` (via setpriv), since Dovecot refuses mail access as UID 0.
#
# A sample Maildir (2,000 Realistic messages, ~119 MB):
#   MAILFERRY_SAMPLE_DIR=/tmp/mf-sample MAILFERRY_SAMPLE_MESSAGES=2000 \
#     cargo test -p mailferry --lib sample::tests::write_bench_sample -- --ignored
#
# Output on stdout, one `name key=value ...` line per run, for another program to parse:
#   dovecot version=2.3.19.1
#   dovecot_mailcrypt messages=2000 bytes=118767556 seconds=9.12 mb_per_s=13.02 msgs_per_s=219.3 encrypted=yes
#   dovecot_plain messages=2000 bytes=118767556 seconds=0.91 mb_per_s=130.5 msgs_per_s=2197.8 encrypted=no
# MB is 10^6 bytes of message files. Progress and errors go to stderr.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 MAILDIR WORKDIR" >&2
    exit 2
fi
src=$(realpath "$1")
work=$(realpath -m "$2")
tools=(doveadm dovecot openssl)
[[ $(id -u) -ne 0 ]] || tools+=(setpriv)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found (apt-get install -y dovecot-core openssl)" >&2; exit 2; }
done
[[ -d $src/cur && -d $src/new ]] || { echo "$0: $src is not a Maildir (no cur/ and new/)" >&2; exit 2; }

mkdir -p "$work"
if [[ -n $(ls -A "$work") ]]; then
    echo "$0: $work is not empty; give an empty or new directory" >&2
    exit 2
fi

if [[ $(id -u) -eq 0 ]]; then
    uid=$(id -u nobody)
    gid=$(id -g nobody)
else
    uid=$(id -u)
    gid=$(id -g)
fi
user=bench

# Message files only: cur/ and new/ of INBOX and every Maildir++ folder.
read -r messages bytes < <(find "$src" -type f \( -path '*/cur/*' -o -path '*/new/*' \) -printf '%s\n' |
    awk '{ n++; s += $1 } END { printf "%d %d\n", n, s }')
[[ $messages -gt 0 ]] || { echo "$0: no messages under $src" >&2; exit 2; }

keys=$work/keys
mkdir -p "$keys"
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkey -out "$keys/ecprivkey.pem"
openssl pkey -in "$keys/ecprivkey.pem" -pubout -out "$keys/ecpubkey.pem"

# doveadm as the mail user, without -u: a userdb lookup would need a running auth server,
# while USER and HOME from the environment need none.
dv() {
    local dir=$1
    shift
    if [[ $(id -u) -eq 0 ]]; then
        setpriv --reuid="$uid" --regid="$gid" --clear-groups \
            env USER=$user HOME="$dir/home" doveadm -c "$dir/dovecot.conf" "$@"
    else
        env USER=$user HOME="$dir/home" doveadm -c "$dir/dovecot.conf" "$@"
    fi
}

# write_conf NAME CRYPT(yes|no): a dovecot.conf that touches nothing outside $work/NAME.
write_conf() {
    local dir=$work/$1 crypt=$2
    mkdir -p "$dir/run" "$dir/state" "$dir/home"
    cat >"$dir/dovecot.conf" <<EOF
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
info_log_path = $dir/dovecot.log
protocols =
ssl = no
mail_location = maildir:$dir/src
namespace inbox {
  inbox = yes
  separator = /
  prefix =
}
EOF
    if [[ $crypt == yes ]]; then
        cat >>"$dir/dovecot.conf" <<EOF
mail_plugins = \$mail_plugins mail_crypt
plugin {
  mail_crypt_global_private_key = <$keys/ecprivkey.pem
  mail_crypt_global_public_key = <$keys/ecpubkey.pem
  mail_crypt_save_version = 2
}
EOF
    fi
}

# sync_tree DIR: fdatasync every file under DIR, then fsync every directory (new entries).
sync_tree() {
    find "$1" -type f -print0 | xargs -0 -r sync -d
    find "$1" -type d -print0 | xargs -0 -r sync
}

# run NAME CRYPT: copy the Maildir, flush, then time `doveadm backup` into mdbox plus sync.
run() {
    local name=$1 crypt=$2 dir=$work/$1
    write_conf "$name" "$crypt"
    echo "$name: copying $src" >&2
    cp -a "$src" "$dir/src"
    if [[ $(id -u) -eq 0 ]]; then
        chown -R "$uid:$gid" "$dir" "$keys"
        chmod 0755 "$work"
    fi
    sync
    echo "$name: doveadm backup -> mdbox" >&2
    local t0 t1
    t0=$(date +%s.%N)
    if ! dv "$dir" backup "mdbox:$dir/mdbox" >&2; then
        echo "$0: doveadm backup failed; log follows" >&2
        cat "$dir/dovecot.log" >&2 || true
        exit 1
    fi
    sync_tree "$dir/mdbox"
    t1=$(date +%s.%N)

    # mail_crypt must have encrypted everything: no plaintext header left in the storage.
    local plain encrypted
    plain=$({ grep -rlaF 'Return-Path:' "$dir/mdbox/storage" || true; } | wc -l)
    if [[ $crypt == yes ]]; then
        [[ $plain -eq 0 ]] || { echo "$0: $plain mdbox files hold plaintext with mail_crypt on" >&2; exit 1; }
        encrypted=yes
    else
        [[ $plain -gt 0 ]] || { echo "$0: no plaintext in the unencrypted mdbox?" >&2; exit 1; }
        encrypted=no
    fi
    local stored
    stored=$(dv "$dir" -o "mail_location=mdbox:$dir/mdbox" mailbox status -t messages '*' |
        awk -F= '{ print $NF }')
    [[ $stored -eq $messages ]] || { echo "$0: $name stored $stored of $messages messages" >&2; exit 1; }

    awk -v name="$name" -v n="$messages" -v b="$bytes" -v t0="$t0" -v t1="$t1" -v enc="$encrypted" 'BEGIN {
        s = t1 - t0
        printf "%s messages=%d bytes=%d seconds=%.3f mb_per_s=%.2f msgs_per_s=%.1f encrypted=%s\n",
            name, n, b, s, b / 1e6 / s, n / s, enc
    }'
}

echo "dovecot version=$(dovecot --version | awk '{ print $1 }')"
run dovecot_mailcrypt yes
run dovecot_plain no
