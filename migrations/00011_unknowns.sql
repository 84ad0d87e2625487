-- +goose Up
-- Shapes of deliveries setflow did not expect (an unknown event type, an
-- unknown field of a known event, a redelivery after a 2xx), one row per
-- kind, so that the wire-format notes can be corrected from real traffic.
-- A kind names routes, event types and field names, never a value.
CREATE TABLE setflow_unknowns (
    route       text        NOT NULL,
    kind        text        NOT NULL,
    detail      text        NOT NULL DEFAULT '',
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    seen        bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (route, kind, detail)
);

-- +goose Down
DROP TABLE IF EXISTS setflow_unknowns;
