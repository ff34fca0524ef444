-- 0006_workspace_untracked: whether the workspace last prepared in a VM
-- included untracked files, so that --auto-prepare re-syncs it with the
-- same options as the prepare it repeats.
ALTER TABLE vms ADD COLUMN workspace_include_untracked INTEGER NOT NULL DEFAULT 0;
