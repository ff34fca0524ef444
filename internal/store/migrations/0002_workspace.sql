-- 0002_workspace: the workspace last prepared in each VM (host path, mode,
-- host HEAD at the time), so exec can start in it and --auto-prepare can
-- re-sync it.
ALTER TABLE vms ADD COLUMN workspace_path TEXT NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN workspace_mode TEXT NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN workspace_head TEXT NOT NULL DEFAULT '';
