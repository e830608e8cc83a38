-- The food-delivery example schema, created on every shard.
-- users, orders and order_items are hash-sharded by user id (co-located);
-- restaurants is a reference table (a full copy on every shard);
-- events is range-sharded by created_at.
-- orders and events are also partitioned by month inside each shard;
-- partman creates the monthly partitions ahead of time, and the DEFAULT
-- partition catches rows for months that have none yet.

CREATE TABLE IF NOT EXISTS users (
    id          bigint PRIMARY KEY,
    name        text        NOT NULL,
    email       text        NOT NULL,
    city        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS restaurants (
    id       bigint PRIMARY KEY,
    name     text         NOT NULL,
    city     text         NOT NULL,
    cuisine  text         NOT NULL,
    rating   numeric(2,1)
);

CREATE TABLE IF NOT EXISTS orders (
    id             bigint        NOT NULL,
    user_id        bigint        NOT NULL,
    restaurant_id  bigint        NOT NULL,
    total          numeric(10,2) NOT NULL,
    status         text          NOT NULL,
    created_at     timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE IF NOT EXISTS orders_default PARTITION OF orders DEFAULT;
CREATE INDEX IF NOT EXISTS orders_user_id_idx ON orders (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS orders_status_idx ON orders (status);

CREATE TABLE IF NOT EXISTS order_items (
    id        bigint        NOT NULL,
    order_id  bigint        NOT NULL,
    user_id   bigint        NOT NULL,
    name      text          NOT NULL,
    quantity  integer       NOT NULL,
    price     numeric(10,2) NOT NULL,
    PRIMARY KEY (user_id, id)
);
CREATE INDEX IF NOT EXISTS order_items_order_id_idx ON order_items (order_id);

CREATE TABLE IF NOT EXISTS events (
    id          bigint      NOT NULL,
    user_id     bigint,
    kind        text        NOT NULL,
    payload     jsonb,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE IF NOT EXISTS events_default PARTITION OF events DEFAULT;
CREATE INDEX IF NOT EXISTS events_kind_idx ON events (kind, created_at);
