-- Passwords iamdb gives database users on upstreams with backend_auth mode
-- managed. Sealed under the master key with "backend/INSTANCE/USER" as
-- additional data, so a value copied onto another row does not open.
-- Rotation is not authorization state: writes here do not bump generation.

CREATE TABLE backend_passwords (
    instance        TEXT NOT NULL,
    db_user         TEXT NOT NULL,
    sealed_password BYTEA NOT NULL,
    rotated_at      BIGINT NOT NULL,
    PRIMARY KEY (instance, db_user)
);
