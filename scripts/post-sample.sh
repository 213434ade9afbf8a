#!/usr/bin/env bash
# Posts a sample CRM deal to a running orderbridge as a signed Standard Webhook.
#
#   scripts/post-sample.sh [FIXTURE] [URL]
#
#   FIXTURE  JSON body to send         (default: tests/fixtures/demo-crm-deal.json)
#   URL      the connector's webhook   (default: http://127.0.0.1:8080/webhooks/demo-crm)
#
# Needs DEMO_CRM_SECRET (the connector's `whsec_…` secret) in the environment, and
# openssl, base64, od and curl. Prints the daemon's answer and exits 0 on 202.
#
# Optional: WEBHOOK_ID and WEBHOOK_TIMESTAMP fix the id and timestamp (default: a
# random id and now); SIGN_ONLY=1 prints the webhook-signature value and sends nothing.
#
# The Standard Webhooks scheme (standardwebhooks.com): the HMAC key is the base64
# text after `whsec_`, decoded; the signed content is `<webhook-id>.<webhook-timestamp>.<body>`;
# the signature is HMAC-SHA256, sent base64-encoded as `webhook-signature: v1,<sig>`.
# The timestamp is Unix seconds and must be within the connector's tolerance_secs
# (300 by default) of the daemon's clock.
set -euo pipefail

FIXTURE=${1:-tests/fixtures/demo-crm-deal.json}
URL=${2:-http://127.0.0.1:8080/webhooks/demo-crm}

: "${DEMO_CRM_SECRET:?set DEMO_CRM_SECRET to the demo-crm webhook secret (whsec_…)}"
[[ -r $FIXTURE ]] || { echo "cannot read $FIXTURE" >&2; exit 1; }
for tool in openssl base64 od curl; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

# The HMAC key: base64 after the whsec_ prefix, decoded, as hex for openssl.
key_hex=$(printf '%s' "${DEMO_CRM_SECRET#whsec_}" | base64 -d | od -An -v -tx1 | tr -d ' \n')

# A fresh message id per delivery (a retry of the same delivery would reuse it).
msg_id=${WEBHOOK_ID:-msg_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}
timestamp=${WEBHOOK_TIMESTAMP:-$(date +%s)}

# Sign exactly the bytes that are sent: the file itself, never a shell copy of it.
signature=$(
  { printf '%s.%s.' "$msg_id" "$timestamp"; cat "$FIXTURE"; } |
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key_hex" -binary |
    base64 | tr -d '\n'
)

if [[ ${SIGN_ONLY:-} == 1 ]]; then
  # For checking the signing against a known vector; sends nothing.
  echo "v1,$signature"
  exit 0
fi

answer=$(mktemp)
trap 'rm -f "$answer"' EXIT
status=$(curl -sS -o "$answer" -w '%{http_code}' -X POST "$URL" \
  -H 'content-type: application/json' \
  -H "webhook-id: $msg_id" \
  -H "webhook-timestamp: $timestamp" \
  -H "webhook-signature: v1,$signature" \
  --data-binary "@$FIXTURE")
echo "HTTP $status"
cat "$answer"
echo
[[ $status == 202 ]]
