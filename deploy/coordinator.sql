-- The coordinator database (docs/routing.md, "The coordinator"), created in
-- every Postgres service at first start; the proxies use pg0's and fill it
-- themselves (postgres_fdw over the shards).
CREATE DATABASE shardproxy_coordinator;
