#!/usr/bin/env bash
# Load run for `mailferry serve`: N agent processes move N mailboxes at once through one
# proxy+store over loopback HTTPS, then the script reads throughput, the commit latency
# histogram (/metrics) and the server's peak RSS. Loopback only; bounded by N and the
# corpus size; it stops serve (SIGTERM) at the end.
#
#   benches/load-serve.sh [AGENTS=50] [MESSAGES_PER_MAILBOX=200] [WORKDIR]
#
# Needs a release build (cargo build --release) and python3 (sample generation reuses
# the Rust generator through a tiny `mailferry demo`-free path: see below).
set -euo pipefail
agents=${1:-50}
per=${2:-200}
work=${3:-$(mktemp -d)}
bin=$(cd "$(dirname "$0")/.." && pwd)/target/release/mailferry
[[ -x $bin ]] || { echo "$0: build first: cargo build --release" >&2; exit 2; }
mkdir -p "$work"
cd "$work"

echo "load: $agents agents x $per messages, work dir $work" >&2
# One sample Maildir, generated once with the demo's generator, copied per mailbox.
"$bin" demo --data demo --messages "$per" >/dev/null
"$bin" volume init --volume vol --key-file vol.key >/dev/null
"$bin" token issue --volume vol --key-file vol.key --tenant example.com --out agent.token >/dev/null

"$bin" serve --volume vol --key-file vol.key --listen 127.0.0.1:0 \
    --max-streams-per-token "$agents" 2>serve.log &
serve=$!
trap 'kill -TERM $serve 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    grep -q "agents must trust the CA" serve.log && break
    sleep 0.1
done
url=$(grep -o 'https://[0-9.:]*' serve.log | head -1)
ca=$(sed -n 's/.*agents must trust the CA //p' serve.log | head -1)

start=$(date +%s.%N)
pids=()
for i in $(seq "$agents"); do
    "$bin" move --source maildir:demo/source-maildir --mailbox "user$i@example.com" \
        --proxy "$url" --ca "$ca" --token-file agent.token --state "state-$i" --json \
        >"report-$i.json" 2>"agent-$i.log" &
    pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
end=$(date +%s.%N)

metrics=$(curl -sk --cacert "$ca" "$url/metrics" 2>/dev/null || true)
if [[ -z $metrics ]]; then
    metrics=$(python3 - "$url" "$ca" <<'PY'
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
print(urllib.request.urlopen(sys.argv[1] + "/metrics", context=ctx).read().decode())
PY
)
fi
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$serve/status")
kill -TERM "$serve"
wait "$serve" || true
trap - EXIT

python3 - "$agents" "$start" "$end" "$failed" "$rss_kb" <<PY
import json, sys, glob
agents, start, end, failed, rss = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
moved = bytes_ = 0
for f in glob.glob("report-*.json"):
    try:
        r = json.load(open(f))
    except Exception:
        continue
    moved += r["items_moved"]; bytes_ += r["bytes_moved"]
secs = end - start
metrics = """$metrics"""
buckets = []
count = 0
for line in metrics.splitlines():
    if line.startswith("mailferry_commit_seconds_bucket"):
        le = line.split('le="')[1].split('"')[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), int(line.split()[-1])))
    if line.startswith("mailferry_commit_seconds_count"):
        count = int(line.split()[-1])
p99 = next((le for le, c in buckets if count and c >= 0.99 * count), None)
print(f"load agents={agents} failed={failed} messages={moved} bytes={bytes_} seconds={secs:.2f} "
      f"mb_per_s={bytes_/1e6/secs:.1f} msgs_per_s={moved/secs:.0f} commits={count} "
      f"commit_p99_le_s={p99} serve_peak_rss_mib={rss/1024:.0f}")
PY
