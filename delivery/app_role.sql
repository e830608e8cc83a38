-- The application role of the example: what the app's users reach the
-- shards as (backend_roles: per_user), with rights on the app's tables
-- only: not a superuser, so pg_read_file, COPY ... PROGRAM or writes to
-- the catalogs are refused by Postgres (42501). Run as a superuser on
-- every shard, before or after schema.sql; idempotent. The demo runs it,
-- compose.yaml mounts it into each Postgres's initdb scripts.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN
    CREATE ROLE app LOGIN PASSWORD 'app' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
  END IF;
END
$$;
-- DDL through the proxy (the demo creates the schema as app).
GRANT CREATE, USAGE ON SCHEMA public TO app;
-- Tables created by the superuser (schema.sql at initdb, partman's
-- partitions): the app reads and writes them.
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON ALL TABLES IN SCHEMA public TO app;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON TABLES TO app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO app;
