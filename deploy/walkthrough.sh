#!/usr/bin/env bash
# README "Deploying", step by step, on this machine (run as root; it installs aula, adds the
# user aula and writes /etc/aula and /var/lib/aula: `--undo` removes them). The "server" is a
# network namespace with one address (10.204.0.2) holding moto (for R2) and coturn; Chromium
# runs outside it. No systemd as init here: step 5 runs the unit's ExecStart as user aula with
# the unit's capability. Not part of the test command (it changes the machine).
set -euo pipefail
W=$(mktemp -d)  # logs, tokens, the certificate hash
trap 'echo "logs in $W; undo with: deploy/walkthrough.sh --undo"' EXIT
if [ "${1:-}" = --undo ]; then
  pkill -f "aula --config /etc/aula/aula.toml serve" || true; pkill -f "moto.server -H 10.204" || true
  pkill -f "listening-ip=10.204" || true; sleep 1; ip link del walk-a 2>/dev/null || true; ip netns del aulawalk 2>/dev/null || true
  rm -rf /etc/aula /var/lib/aula /usr/local/bin/aula; userdel aula 2>/dev/null || true; trap - EXIT; exit 0
fi
cd "$(dirname "$0")/.."
NS=aulawalk; IP=10.204.0.2
step() { echo "== $*"; }
step "1. build"; cargo build --release -p aula 2>&1 | tail -1
step "2. install"; install -m 0755 target/release/aula /usr/local/bin/aula
id aula >/dev/null 2>&1 || useradd --system --home /var/lib/aula aula
install -d -o aula /var/lib/aula /etc/aula
step "network namespace for the server"
ip netns add $NS; ip link add walk-a type veth peer name walk-b; ip link set walk-b netns $NS
ip addr add 10.204.0.1/24 dev walk-a; ip link set walk-a up
ip netns exec $NS sh -c "ip addr add $IP/24 dev walk-b && ip link set walk-b up && ip link set lo up"
step "R2 stand-in (moto) and coturn inside it"
ip netns exec $NS python3 -m moto.server -H $IP -p 9000 >"$W"/moto.log 2>&1 &
ip netns exec $NS turnserver -n --listening-ip=$IP --listening-port=3478 --use-auth-secret --static-auth-secret=walk-turn-secret --realm=aula.test --no-cli --no-tls --no-dtls >"$W"/turn.log 2>&1 &
for i in $(seq 50); do curl -s -o /dev/null http://$IP:9000 && break; sleep 0.2; done
curl -s -X PUT http://$IP:9000/aula -o /dev/null -w "bucket %{http_code}\n"
step "3. configure"
cp deploy/aula.toml /etc/aula/
sed -i "s/public_ip = \"203.0.113.10\"/public_ip = \"$IP\"/; s#https://<account-id>.r2.cloudflarestorage.com#http://$IP:9000#; s/turn.example.org:3478/$IP:3478/; s#, \"turns:turn.example.org:443?transport=tcp\"##" /etc/aula/aula.toml
cp deploy/secrets.env.example /etc/aula/secrets.env; chmod 0600 /etc/aula/secrets.env
sed -i 's/^AULA_AUTH__API_SECRET=.*/AULA_AUTH__API_SECRET=walk-api-secret-0123456789abcdefghij/; s/^AULA_SIGNING__KEYS=.*/AULA_SIGNING__KEYS={k1="walk-signing-key-0123456789abcdefghij"}/; s/^AULA_TURN__SECRET=.*/AULA_TURN__SECRET=walk-turn-secret/; s/^AULA_STORAGE__S3__ACCESS_KEY_ID=.*/AULA_STORAGE__S3__ACCESS_KEY_ID=test/; s/^AULA_STORAGE__S3__SECRET_ACCESS_KEY=.*/AULA_STORAGE__S3__SECRET_ACCESS_KEY=test/' /etc/aula/secrets.env
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$IP" -addext "subjectAltName=IP:$IP" -keyout /etc/aula/privkey.pem -out /etc/aula/fullchain.pem 2>/dev/null
chgrp aula /etc/aula/privkey.pem; chmod 0640 /etc/aula/privkey.pem
openssl x509 -in /etc/aula/fullchain.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64 > "$W"/spki
step "4. check"
set -a; . /etc/aula/secrets.env; set +a
/usr/local/bin/aula --config /etc/aula/aula.toml config | grep -E "public_ip|endpoint|tcp_on_http|api_secret"
step "5. run (the unit's ExecStart, as user aula with CAP_NET_BIND_SERVICE; no systemd init here)"
ip netns exec $NS setpriv --reuid aula --regid aula --init-groups --inh-caps +net_bind_service --ambient-caps +net_bind_service \
  env RUST_LOG=info,str0m=warn /usr/local/bin/aula --config /etc/aula/aula.toml serve >"$W"/serve.out 2>"$W"/serve.log &
for i in $(seq 100); do grep -q "aula listening" "$W"/serve.out && break; sleep 0.2; done
cat "$W"/serve.out
step "7. tokens"
/usr/local/bin/aula --config /etc/aula/aula.toml token --room walk --identity tutor --publish --publish-data > "$W"/t1
/usr/local/bin/aula --config /etc/aula/aula.toml token --room walk --identity student --publish > "$W"/t2
step "a class in a browser"
(cd web && node ../deploy/walkthrough.mjs https://$IP "$(cat "$W"/spki)" "$(cat "$W"/t1)" "$(cat "$W"/t2)")
