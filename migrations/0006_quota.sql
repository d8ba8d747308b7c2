-- 0006_quota: what CHECK_MODE=combined records (see docs/quota.md).
--
-- Additive only. Runs inside the transaction ev_migrate_run opens.

-- A check answered by a call that asked several checks at once. That call's
-- HTTP attempts, latency and tokens are recorded on the first check it
-- answered (the others show 0 attempts), so sums over rows stay true.
alter table validation_results add column combined boolean not null default false;
