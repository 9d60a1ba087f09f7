#!/usr/bin/env bash
# Generates a development PKI (CA, server and client certificates) with openssl.
# Usage: certs/generate.sh OUT_DIR   -- does nothing if OUT_DIR/server.crt already exists.
# For development and tests only: never use these keys in production.
set -euo pipefail
out=${1:?usage: certs/generate.sh OUT_DIR}
if [ -f "$out/server.crt" ] && [ -f "$out/server.key" ]; then
  exit 0
fi
command -v openssl >/dev/null || { echo "certs/generate.sh: openssl is required (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=sluice dev CA" -keyout ca.key -out ca.crt 2>/dev/null
for name in server client; do
  if [ "$name" = server ]; then
    cn=localhost; ext="subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
  else
    cn=demo; ext="extendedKeyUsage=clientAuth"
  fi
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$cn" \
    -keyout "$name.key.tmp" -out "$name.csr" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$name.key.tmp" -out "$name.key"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile <(printf '%s\n' "$ext") -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.key.tmp"
done
chmod 644 ca.crt server.crt client.crt
echo "certs/generate.sh: wrote CA, server and client certificates to $out" >&2
