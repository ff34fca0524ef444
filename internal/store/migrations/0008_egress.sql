-- 0008_egress: each VM's egress policy (issue 14) as JSON (policy.Spec:
-- mode, allow rules, secrets; '' for VMs made before policies, whose nat
-- column says all or none) and the VM's secret placeholders (JSON object:
-- secret name -> placeholder), stable across restarts.
ALTER TABLE vms ADD COLUMN egress              TEXT NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN egress_placeholders TEXT NOT NULL DEFAULT '{}';
