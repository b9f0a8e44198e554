#!/bin/sh
# Sourced by the postgres image's entrypoint on first start (empty volume):
# one role and one database per service, the role owning its database, so
# `<service> migrate` can create its tables and the relay (which connects
# with each service's credentials) can read and mark the outbox. The body
# runs in a subshell so its shell options and variables stay out of the
# entrypoint that sources it; a failure still stops the entrypoint.
(
    set -eu
    for svc in order inventory payment notification catalog; do
        var="$(echo "$svc" | tr '[:lower:]' '[:upper:]')_DB_PASSWORD"
        eval "password=\${$var}"
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            -v role="orderflow_$svc" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'role', :'role') \gexec
SQL
    done
)
