-- Closing a slot. A slot's closing time follows from its date, its end
-- time and the service's settings, so only the moment it actually closed
-- is kept. Slot events carry the slot's closing time and whether it has
-- closed; the slot events logged before this migration get the end of
-- their date in UTC and "open", which is what they were told as.
ALTER TABLE slots ADD COLUMN closed_at INTEGER;
ALTER TABLE events ADD COLUMN closes_at INTEGER;
ALTER TABLE events ADD COLUMN closed INTEGER;
UPDATE events
   SET closes_at = (CAST(julianday(date) - 2440587.5 AS INTEGER) + 1) * 86400 * 1000000000,
       closed = 0
 WHERE kind = 'SLOT';
