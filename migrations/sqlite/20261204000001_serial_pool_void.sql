-- The serial-number pool as a state machine with an owner (src/db/serials.rs):
--   free      never written to any chip; attempt_id NULL
--   reserved  held by running attempt attempt_id
--   used      attempt attempt_id passed: its unit's chip carries the number
--   void      attempt attempt_id failed or ended unknown after the write began: the number may
--             sit in that unit's chip, so only that unit may ever take it again
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt.
CREATE TABLE serial_numbers_v2 (
    sku        TEXT NOT NULL,
    number     INTEGER NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('free', 'reserved', 'used', 'void')),
    attempt_id INTEGER REFERENCES attempts (id),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (sku, number),
    -- free numbers have no owner, reserved and used ones always do; a void number has its
    -- attempt (NULL only for legacy ownerless reservations, which no unit may take again)
    CHECK ((state = 'free' AND attempt_id IS NULL) OR (state IN ('reserved', 'used') AND attempt_id IS NOT NULL) OR state = 'void')
);
INSERT INTO serial_numbers_v2 (sku, number, state, attempt_id, updated_at)
    SELECT sku, number,
           CASE WHEN state <> 'free' AND attempt_id IS NULL THEN 'void' ELSE state END,
           CASE WHEN state = 'free' THEN NULL ELSE attempt_id END,
           updated_at
    FROM serial_numbers;
DROP TABLE serial_numbers;
ALTER TABLE serial_numbers_v2 RENAME TO serial_numbers;
CREATE INDEX serial_numbers_free ON serial_numbers (sku, number) WHERE state = 'free';
CREATE INDEX serial_numbers_attempt ON serial_numbers (attempt_id) WHERE attempt_id IS NOT NULL;
