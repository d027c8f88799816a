-- Indexes that let `report yield` over the whole history run without sorting the attempts:
-- per-unit first/last attempt and cycle sums stream from a covering index in unit order, the
-- cycle-time histogram from an index on cycle_ms, the failure Pareto from a partial index on
-- the (few) non-passing attempts.
CREATE INDEX attempts_unit_cover ON attempts (unit_id, attempt_no, result, cycle_ms);
CREATE INDEX attempts_cycle ON attempts (cycle_ms);
CREATE INDEX attempts_failures ON attempts (failure_class) WHERE result <> 'pass' AND result <> 'running';
