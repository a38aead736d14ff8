-- mailferry coordination schema, version 2 (docs/coordination.md, "Tables").

-- The admin service's choices for a batch it created (the wizard's migration type,
-- settings, report recipients, creator: what `admin.json` holds beside a batch
-- directory). NULL for batches made with `mailferry batch new --db`.
ALTER TABLE batches ADD COLUMN admin jsonb;
