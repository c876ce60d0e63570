-- Result outbox: a result's message on the results exchange and its webhook call are owed
-- until confirmed. NULL means owed; the worker's sweep delivers what a dead worker left
-- (at least once: consumers deduplicate by result id).
ALTER TABLE results ADD COLUMN published_at BIGINT;
ALTER TABLE results ADD COLUMN webhook_sent_at BIGINT;
-- Results from before the outbox were delivered (or not) by the old code: nothing is owed.
UPDATE results SET published_at = created_at, webhook_sent_at = created_at;
CREATE INDEX results_unpublished ON results (id) WHERE published_at IS NULL;
CREATE INDEX results_webhook_unsent ON results (id) WHERE webhook_sent_at IS NULL;
