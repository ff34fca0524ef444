-- 0004_engine: each VM's VMM (fixed at create, since the root disk's
-- format depends on it) and how its root disk was cloned from the image.
ALTER TABLE vms ADD COLUMN engine     TEXT NOT NULL DEFAULT 'qemu';
ALTER TABLE vms ADD COLUMN disk_clone TEXT NOT NULL DEFAULT '';
