-- 0003_network: each VM's network mode, bridge address, NAT flag, published
-- ports (JSON array of {host_ip, host_port, guest_port}) and, in user mode,
-- the host port forwarded to its sshd. An address belongs to at most one
-- VM; deleting the VM releases it.
ALTER TABLE vms ADD COLUMN network  TEXT    NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN ip       TEXT    NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN nat      INTEGER NOT NULL DEFAULT 0 CHECK (nat IN (0, 1));
ALTER TABLE vms ADD COLUMN publish  TEXT    NOT NULL DEFAULT '[]';
ALTER TABLE vms ADD COLUMN ssh_port INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX vms_ip ON vms (ip) WHERE ip <> '';
