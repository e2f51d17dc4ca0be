-- A wait_for_event timeout is a row too: when a run is resumed, the wait goes on with the
-- time that was left, instead of starting again from zero. (Same as SQLite version 2.)
ALTER TABLE waiters ADD COLUMN timeout_at double precision;
