-- 0007_snapshots: saved VMs (memory, device state, frozen disks). A
-- snapshot outlives the VM it was taken of: vm_id has no foreign key.
CREATE TABLE snapshots (
    id           TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
    name         TEXT    NOT NULL UNIQUE CHECK (name <> ''),
    vm_id        TEXT    NOT NULL DEFAULT '',
    vm_name      TEXT    NOT NULL DEFAULT '',
    engine       TEXT    NOT NULL CHECK (engine <> ''),
    vmm_version  TEXT    NOT NULL DEFAULT '',
    kernel       TEXT    NOT NULL DEFAULT '',
    image        TEXT    NOT NULL DEFAULT '',
    vcpu         INTEGER NOT NULL DEFAULT 0,
    memory_mib   INTEGER NOT NULL DEFAULT 0,
    disk_size    INTEGER NOT NULL DEFAULT 0,
    no_work_disk INTEGER NOT NULL DEFAULT 0 CHECK (no_work_disk IN (0, 1)),
    state_bytes  INTEGER NOT NULL DEFAULT 0,
    disk_bytes   INTEGER NOT NULL DEFAULT 0,
    save_ms      INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT    NOT NULL
) STRICT;
