#!/bin/sh
# The secrets docker-compose.yml reads, in ./secrets (or the folder given): random passwords
# for Redis, PostgreSQL and Grafana's admin (monitoring profile), the URLs docqa reads through DOCQA_BROKER_URL_FILE and
# DOCQA_DATABASE_URL_FILE (TLS: rediss://, sslmode=verify-full), and a private certificate
# authority with one server certificate for both services. A file that exists is kept, so
# running it again changes nothing; delete a file (and the URL that quotes it) to renew it.
#
# The folder is private to you (0700). Compose mounts each file into the services, which
# run as other users, so the files the containers read are 0644 inside that folder; the
# CA's key never leaves it. Keep the folder out of git (.gitignore) and of the image
# (.dockerignore).
set -eu
dir=${1:-secrets}
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"
umask 022

password() { openssl rand -hex 24; }
[ -s redis_password ] || password > redis_password
[ -s postgres_password ] || password > postgres_password
[ -s grafana_admin_password ] || password > grafana_admin_password

if [ ! -s ca.crt ]; then
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key)
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=docqa compose CA" -out ca.crt
fi
if [ ! -s tls.crt ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out tls.key
    openssl req -new -key tls.key -subj "/CN=docqa services" -out tls.csr
    printf '%s\n' "subjectAltName=DNS:redis,DNS:postgres,DNS:localhost,IP:127.0.0.1" \
        "extendedKeyUsage=serverAuth" > tls.ext
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 825 \
        -extfile tls.ext -out tls.crt 2>/dev/null
    rm -f tls.csr tls.ext ca.srl
fi

# The services reach each other by their compose names; /run/secrets/tls_ca is where
# compose mounts ca.crt.
[ -s broker_url ] || printf 'rediss://:%s@redis:6379/0?ssl_cert_reqs=required&ssl_ca_certs=/run/secrets/tls_ca\n' \
    "$(cat redis_password)" > broker_url
[ -s database_url ] || printf 'postgresql+psycopg://docqa:%s@postgres:5432/docqa?sslmode=verify-full&sslrootcert=/run/secrets/tls_ca\n' \
    "$(cat postgres_password)" > database_url
chmod 644 redis_password postgres_password grafana_admin_password broker_url database_url ca.crt tls.crt tls.key
echo "secrets in $(pwd): $(ls | tr '\n' ' ')"
