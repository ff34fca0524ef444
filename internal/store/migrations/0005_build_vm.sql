-- 0005_build_vm: VMs that build images have no work disk, so /root is
-- part of the root disk that becomes the new image.
ALTER TABLE vms ADD COLUMN no_work_disk INTEGER NOT NULL DEFAULT 0;
