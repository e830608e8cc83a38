#!/bin/sh
# Lets the compose replicas (pg0-replica...) stream from this primary:
# replication connections with the postgres user's password.
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
