-- 0001_init: kernels, images and VMs.
--
-- Conventions for this and every later migration:
--   * tables are STRICT; times are TEXT in UTC, RFC 3339 with exactly nine
--     fractional digits ("2006-01-02T15:04:05.000000000Z"), so that text order
--     is time order; an unset time is NULL;
--   * booleans are INTEGER 0/1 with a CHECK;
--   * a table that belongs to a VM (address allocations, sessions, ...)
--     references vms(id) ON DELETE CASCADE;
--   * a migration file is never edited once released: its sha256 is recorded
--     in schema_migrations and checked on every start.
--
-- VMs name their image and kernel by name without a foreign key: the daemon
-- decides whether an image or kernel may be removed (CountVMsUsing*), and a
-- VM outlives the removal of the artefacts it was booted from.

CREATE TABLE kernels (
    name       TEXT    NOT NULL PRIMARY KEY CHECK (name <> ''),
    version    TEXT    NOT NULL DEFAULT '',
    vmlinux    TEXT    NOT NULL DEFAULT '',
    initramfs  TEXT    NOT NULL DEFAULT '',
    sha256     TEXT    NOT NULL DEFAULT '',
    source     TEXT    NOT NULL DEFAULT '',
    created_at TEXT    NOT NULL
) STRICT;

CREATE TABLE images (
    name       TEXT    NOT NULL PRIMARY KEY CHECK (name <> ''),
    rootfs     TEXT    NOT NULL DEFAULT '',
    kernel     TEXT    NOT NULL DEFAULT '',
    size_bytes INTEGER NOT NULL DEFAULT 0,
    source     TEXT    NOT NULL DEFAULT '',
    created_at TEXT    NOT NULL
) STRICT;

CREATE TABLE vms (
    id          TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
    name        TEXT    NOT NULL UNIQUE CHECK (name <> ''),
    image       TEXT    NOT NULL DEFAULT '',
    kernel      TEXT    NOT NULL DEFAULT '',
    vcpu        INTEGER NOT NULL DEFAULT 0,
    memory_mib  INTEGER NOT NULL DEFAULT 0,
    disk_size   INTEGER NOT NULL DEFAULT 0,
    state       TEXT    NOT NULL,
    pid         INTEGER NOT NULL DEFAULT 0,
    accel       TEXT    NOT NULL DEFAULT '',
    auto_remove INTEGER NOT NULL DEFAULT 0 CHECK (auto_remove IN (0, 1)),
    last_error  TEXT    NOT NULL DEFAULT '',
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    started_at  TEXT
) STRICT;

CREATE INDEX vms_by_created ON vms (created_at, name);
CREATE INDEX vms_by_image ON vms (image);
CREATE INDEX vms_by_kernel ON vms (kernel);
