#!/bin/sh
# Regenerates the PKCS#12 test fixtures in this folder (test-only keys: never use them for anything
# real). Run from this folder with OpenSSL 3. The tests read the committed files, so CI needs no
# openssl; rerun only to change the fixtures.
set -eu
PASS=pod-identity-test
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj /CN=pod-identity-test-ca \
  -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=pod-identity-test-sp \
  -keyout "$tmp/sp.key" -out "$tmp/sp.csr" 2>/dev/null
# X.509 v3 (an extension makes it so): v1 certificates are refused by webpki, and so by the emulator.
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n' > "$tmp/ext"
openssl x509 -req -in "$tmp/sp.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
  -extfile "$tmp/ext" -days 36500 -out sp-cert.pem 2>/dev/null
# OpenSSL 3's default: PBES2 (PBKDF2, AES-256-CBC) bags, HMAC-SHA256 MAC; the CA after the leaf.
openssl pkcs12 -export -in sp-cert.pem -inkey "$tmp/sp.key" -certfile "$tmp/ca.pem" \
  -passout "pass:$PASS" -out sp-aes.p12
# What older tools (OpenSSL 1.x, Windows, golang.org/x/crypto/pkcs12) write: a 3DES key bag,
# an RC2-40 certificate bag, a SHA-1 MAC.
openssl pkcs12 -export -legacy -in sp-cert.pem -inkey "$tmp/sp.key" \
  -passout "pass:$PASS" -out sp-legacy.p12
# An empty password.
openssl pkcs12 -export -in sp-cert.pem -inkey "$tmp/sp.key" -passout pass: -out sp-empty-password.p12
# Only the certificates, and only the key.
openssl pkcs12 -export -nokeys -in sp-cert.pem -passout "pass:$PASS" -out certs-only.p12
openssl pkcs12 -export -nocerts -inkey "$tmp/sp.key" -passout "pass:$PASS" -out key-only.p12
