#!/bin/sh
# A throwaway CA and one certificate per service, for trying TLS and mutual
# TLS on one machine (the README's TLS recipe; tests/integration/test_tls.py
# runs it). Not for production: use your organisation's CA there.
#
#   deploy/tls/make-dev-certs.sh DIR [NAME ...]
#
# DIR gets ca.pem/ca.key and NAME.pem/NAME.key for each NAME (default:
# scheduler worker gateway client), valid 30 days for localhost and
# 127.0.0.1, usable as server and as client certificates.
set -eu
out=${1:?usage: $0 DIR [NAME ...]}
shift
[ $# -gt 0 ] || set -- scheduler worker gateway client
mkdir -p "$out"
cd "$out"
umask 077
curve="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
# shellcheck disable=SC2086
openssl req -x509 $curve -days 30 -subj "/CN=WSI throwaway CA" \
    -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
cat > leaf.ext <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EXT
for name in "$@"; do
    # shellcheck disable=SC2086
    openssl req $curve -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days 30 -extfile leaf.ext -out "$name.pem" 2>/dev/null
    rm "$name.csr"
done
rm -f leaf.ext ca.srl
chmod 644 ./*.pem
echo "made in $out: ca.pem $(for n in "$@"; do printf '%s.pem/.key ' "$n"; done)"
