-- The serial-number pool as a state machine with an owner (src/db/serials.rs):
--   free      never written to any chip; attempt_id NULL
--   reserved  held by running attempt attempt_id
--   used      attempt attempt_id passed: its unit's chip carries the number
--   void      attempt attempt_id failed or ended unknown after the write began: the number may
--             sit in that unit's chip, so only that unit may ever take it again
ALTER TABLE serial_numbers DROP CONSTRAINT IF EXISTS serial_numbers_state_check;
-- legacy ownerless reservations: no unit may take them again
UPDATE serial_numbers SET state = 'void' WHERE state <> 'free' AND attempt_id IS NULL;
UPDATE serial_numbers SET attempt_id = NULL WHERE state = 'free';
ALTER TABLE serial_numbers ADD CONSTRAINT serial_numbers_state_check
    CHECK (state IN ('free', 'reserved', 'used', 'void'));
-- free numbers have no owner, reserved and used ones always do; a void number has its attempt
-- (NULL only for legacy ownerless reservations)
ALTER TABLE serial_numbers ADD CONSTRAINT serial_numbers_owner_check
    CHECK ((state = 'free' AND attempt_id IS NULL) OR (state IN ('reserved', 'used') AND attempt_id IS NOT NULL) OR state = 'void');
CREATE INDEX serial_numbers_attempt ON serial_numbers (attempt_id) WHERE attempt_id IS NOT NULL;
