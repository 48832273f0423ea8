-- Cloud Spanner schema (GoogleSQL). Applied by the local stack (callpipe.devstack) and by
-- deployment (cloudbuild.yaml) alike; statements are separated by semicolons.
-- Tenant data is keyed by TenantId and interleaved under Tenants, so a tenant's rows sit
-- together and every read is scoped by the first key column.

CREATE TABLE Tenants (
  TenantId STRING(63) NOT NULL,
  Name STRING(MAX) NOT NULL,
  Status STRING(16) NOT NULL,
  CallRailAccountId STRING(32),
  CallRailApiKeySecret STRING(255),
  CreatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
  UpdatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
) PRIMARY KEY (TenantId);

CREATE TABLE Offices (
  TenantId STRING(63) NOT NULL,
  OfficeId STRING(64) NOT NULL,
  Name STRING(MAX) NOT NULL,
  TimeZone STRING(64),
  CreatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
  UpdatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
) PRIMARY KEY (TenantId, OfficeId),
  INTERLEAVE IN PARENT Tenants ON DELETE CASCADE;

-- CallRail company -> tenant/office. Looked up by intake on every webhook (through a TTL
-- cache), by the resource id ("COM...") or by the legacy numeric company id.
CREATE TABLE CallRailCompanies (
  CompanyId STRING(64) NOT NULL,
  LegacyCompanyId STRING(32),
  TenantId STRING(63) NOT NULL,
  OfficeId STRING(64) NOT NULL,
  CallRailAccountId STRING(32) NOT NULL,
  Active BOOL NOT NULL,
  CreatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
  UpdatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
  CONSTRAINT FK_CallRailCompanies_Offices FOREIGN KEY (TenantId, OfficeId)
    REFERENCES Offices (TenantId, OfficeId),
) PRIMARY KEY (CompanyId);

CREATE UNIQUE NULL_FILTERED INDEX CallRailCompaniesByLegacyId
  ON CallRailCompanies (LegacyCompanyId);

CREATE INDEX CallRailCompaniesByTenant ON CallRailCompanies (TenantId, OfficeId);

-- Webhook signing tokens of a company: references to secrets, never the tokens themselves.
-- Several can be active at once so that a token can be rotated without losing webhooks.
CREATE TABLE CompanySigningTokens (
  CompanyId STRING(64) NOT NULL,
  TokenId STRING(64) NOT NULL,
  SecretName STRING(255) NOT NULL,
  Active BOOL NOT NULL,
  CreatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
  RevokedAt TIMESTAMP OPTIONS (allow_commit_timestamp = true),
) PRIMARY KEY (CompanyId, TokenId),
  INTERLEAVE IN PARENT CallRailCompanies ON DELETE CASCADE;

-- One row per distinct webhook event (EventKey dedupes redeliveries and replays). Rows
-- expire after the retention period, as the archived webhooks do (RETENTION_DAYS).
CREATE TABLE WebhookEvents (
  TenantId STRING(63) NOT NULL,
  EventKey STRING(128) NOT NULL,
  CallId STRING(64) NOT NULL,
  EventType STRING(40) NOT NULL,
  CorrelationId STRING(64) NOT NULL,
  Status STRING(16) NOT NULL,
  ArchiveUri STRING(MAX),
  ReceivedAt TIMESTAMP NOT NULL,
  CreatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
  UpdatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
) PRIMARY KEY (TenantId, EventKey),
  INTERLEAVE IN PARENT Tenants ON DELETE CASCADE,
  ROW DELETION POLICY (OLDER_THAN(ReceivedAt, INTERVAL 2555 DAY));

CREATE INDEX WebhookEventsByCall ON WebhookEvents (TenantId, CallId);

-- One row per call and tenant, filled stage by stage: the webhook (register-call), the
-- CallRail API's view of the call (fetch-call), the recording (download-recording); later
-- stages add the transcript and the analysis. Stage/StageStatus summarise the latest step.
-- A call (its stages with it) expires after the retention period, as its recording does:
-- the transcript and analysis hold the caller's words. The interval is RETENTION_DAYS
-- (Terraform's retention_days must equal it; a plan refuses otherwise).
CREATE TABLE Calls (
  TenantId STRING(63) NOT NULL,
  CallId STRING(64) NOT NULL,
  OfficeId STRING(64) NOT NULL,
  CompanyId STRING(64) NOT NULL,
  CallRailAccountId STRING(32),
  CorrelationId STRING(64) NOT NULL,
  Stage STRING(32) NOT NULL,
  StageStatus STRING(16) NOT NULL,
  StageDetail STRING(MAX),
  Direction STRING(16),
  StartTime TIMESTAMP,
  DurationSeconds INT64,
  Answered BOOL,
  Voicemail BOOL,
  CallRailSpam BOOL,
  Webhook JSON,
  CallRailCall JSON,
  FetchedAt TIMESTAMP,
  RecordingStatus STRING(16),
  RecordingDetail STRING(MAX),
  RecordingUri STRING(MAX),
  RecordingSha256 STRING(64),
  RecordingBytes INT64,
  RecordingContentType STRING(64),
  RecordingDurationSeconds FLOAT64,
  RecordingStoredAt TIMESTAMP,
  TranscriptStatus STRING(16),
  TranscriptReason STRING(MAX),
  TranscriptUri STRING(MAX),
  TranscriptText STRING(MAX),
  TranscriptSegments JSON,
  TranscriptEngine STRING(64),
  TranscriptModel STRING(128),
  TranscriptLanguage STRING(16),
  SpeakerCount INT64,
  AudioSeconds FLOAT64,
  AnalysisStatus STRING(16),
  AnalysisReason STRING(MAX),
  Analysis JSON,
  Intent STRING(32),
  ProjectType STRING(32),
  Timeline STRING(32),
  BudgetIndicator STRING(16),
  Sentiment STRING(16),
  Urgency STRING(16),
  LeadScore INT64,
  SpamLikelihood FLOAT64,
  IsSpam BOOL,
  AppointmentRequested BOOL,
  FollowUpRequired BOOL,
  AnalysisEngine STRING(32),
  AnalysisModel STRING(128),
  InputTokens INT64,
  OutputTokens INT64,
  AnalyzedAt TIMESTAMP,
  CompletedAt TIMESTAMP,
  ReceivedAt TIMESTAMP NOT NULL,
  CreatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
  UpdatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
  -- CallRail's marketing source of the call, as the listing's source filter and the
  -- analytics' lead sources compare it: the webhook's, else the API view's; spaces
  -- collapsed, lower case, NULL when neither names one (added by migrations.sql)
  SourceKey STRING(MAX) AS (
    LOWER(NULLIF(REGEXP_REPLACE(TRIM(COALESCE(JSON_VALUE(Webhook, '$.source'), JSON_VALUE(CallRailCall, '$.source'))), '[[:space:]]+', ' '), ''))
  ) STORED,
) PRIMARY KEY (TenantId, CallId),
  INTERLEAVE IN PARENT Tenants ON DELETE CASCADE,
  ROW DELETION POLICY (OLDER_THAN(ReceivedAt, INTERVAL 2555 DAY));

-- The progress of every stage of a call, so a stuck or dead-lettered call shows where.
CREATE TABLE CallStages (
  TenantId STRING(63) NOT NULL,
  CallId STRING(64) NOT NULL,
  Stage STRING(32) NOT NULL,
  Status STRING(16) NOT NULL,
  Detail STRING(MAX),
  Attempts INT64 NOT NULL,
  CorrelationId STRING(64),
  UpdatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
) PRIMARY KEY (TenantId, CallId, Stage),
  INTERLEAVE IN PARENT Calls ON DELETE CASCADE;

CREATE INDEX CallsByStage ON Calls (Stage, StageStatus, UpdatedAt DESC);

-- A call by its CallRail id alone (`callpipe calls show CAL…`, an operator's API read
-- without a tenant): the key starts with the tenant.
CREATE INDEX CallsByCallId ON Calls (CallId);

-- A tenant's calls, newest first (the API's listing and analytics read this), with the
-- columns the listing filters on (stored by migrations.sql in deployed databases).
CREATE INDEX CallsByTenantReceived ON Calls (TenantId, ReceivedAt DESC)
  STORING (StageStatus, Intent, LeadScore, IsSpam, OfficeId, SourceKey, ProjectType,
    FollowUpRequired, AppointmentRequested),
  INTERLEAVE IN Tenants;

-- A tenant's change feed (the listing's updated_since): its calls, oldest change first,
-- with the columns the listing filters on (created by migrations.sql in deployed
-- databases, after the column it stores). Keys grow with time within a tenant only,
-- whose calls change at most a few times a second: no write hot spot.
CREATE INDEX CallsByTenantUpdated ON Calls (TenantId, UpdatedAt)
  STORING (ReceivedAt, StageStatus, Intent, LeadScore, IsSpam, OfficeId, SourceKey,
    ProjectType, FollowUpRequired, AppointmentRequested),
  INTERLEAVE IN Tenants;

-- GCRA state of the per-account CallRail rate limit, shared by every function instance
-- (callpipe.ratelimit): the next "theoretical arrival time" of a request to the account,
-- in the minute window (Tat) and in the hourly and daily budgets (added by migrations.sql;
-- NULL until the budget is used).
CREATE TABLE CallRailRateLimits (
  AccountId STRING(32) NOT NULL,
  Tat TIMESTAMP NOT NULL,
  UpdatedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
  HourTat TIMESTAMP,
  DayTat TIMESTAMP,
) PRIMARY KEY (AccountId);
