-- Changes to objects that already exist in deployed databases, applied by
-- `callpipe deploy ddl` (cloudbuild.yaml's migrate-schema step) after the CREATE statements
-- of schema.sql that a database lacks. Statements are separated by semicolons and run in
-- file order, each only when its effect is missing, so the file only ever grows:
--   ALTER TABLE <table> ADD COLUMN <column> <type> ...;  -- skipped when the column exists
--   ALTER INDEX <index> ADD STORED COLUMN <column>;       -- skipped when the index stores it
--   ALTER TABLE <table> ADD ROW DELETION POLICY (...);     -- skipped when it has one
--   CREATE [UNIQUE] [NULL_FILTERED] INDEX <name> ON ...;   -- skipped when the index exists
-- Reflect every step in schema.sql too (a new column goes at the END of its CREATE TABLE,
-- where ADD COLUMN puts it; a new index is declared there as well; a stored column goes at
-- the end of its index's STORING list, in the order added), so a fresh database and
-- a migrated one are alike: deploy ddl fails when they are not. A new column must be
-- nullable or have a DEFAULT, since the table already has rows.

-- The API's listing filters (status, intent, min_lead_score, spam) are read from the
-- index itself; only the page's rows are read from the table.
ALTER INDEX CallsByTenantReceived ADD STORED COLUMN StageStatus;
ALTER INDEX CallsByTenantReceived ADD STORED COLUMN Intent;
ALTER INDEX CallsByTenantReceived ADD STORED COLUMN LeadScore;
ALTER INDEX CallsByTenantReceived ADD STORED COLUMN IsSpam;

-- Calls and their webhook events expire after the retention period, as recordings and
-- archived webhooks do.
ALTER TABLE WebhookEvents ADD ROW DELETION POLICY (OLDER_THAN(ReceivedAt, INTERVAL 2555 DAY));
ALTER TABLE Calls ADD ROW DELETION POLICY (OLDER_THAN(ReceivedAt, INTERVAL 2555 DAY));

-- CallRail's hourly and daily budgets per account, next to the minute window.
ALTER TABLE CallRailRateLimits ADD COLUMN HourTat TIMESTAMP;
ALTER TABLE CallRailRateLimits ADD COLUMN DayTat TIMESTAMP;

-- The listing's office_id filter, read from the index too.
ALTER INDEX CallsByTenantReceived ADD STORED COLUMN OfficeId;

-- The listing's source filter: the call's marketing source, derived from the stored
-- webhook and API view (backfilled by Spanner for the calls already there), stored in the
-- listing's index; then the change feed's index, which stores it too.
ALTER TABLE Calls ADD COLUMN SourceKey STRING(MAX) AS (
  LOWER(NULLIF(REGEXP_REPLACE(TRIM(COALESCE(JSON_VALUE(Webhook, '$.source'), JSON_VALUE(CallRailCall, '$.source'))), '[[:space:]]+', ' '), ''))
) STORED;
ALTER INDEX CallsByTenantReceived ADD STORED COLUMN SourceKey;
CREATE INDEX CallsByTenantUpdated ON Calls (TenantId, UpdatedAt)
  STORING (ReceivedAt, StageStatus, Intent, LeadScore, IsSpam, OfficeId, SourceKey,
    ProjectType, FollowUpRequired, AppointmentRequested),
  INTERLEAVE IN Tenants;

-- The listing's project_type, follow_up_required and appointment_requested filters.
ALTER INDEX CallsByTenantReceived ADD STORED COLUMN ProjectType;
ALTER INDEX CallsByTenantReceived ADD STORED COLUMN FollowUpRequired;
ALTER INDEX CallsByTenantReceived ADD STORED COLUMN AppointmentRequested;
