-- Frees a session's lock and its running turn's record, if the lock is still the
-- caller's.
-- KEYS[1] lock: the session's lock
-- KEYS[2] active: the running turn's record
-- ARGV[1] token: the caller's lock token
-- RETURNS released
-- released: how many keys went (0: the lock was not the caller's, or holds another
-- type).
-- INCLUDE keys

if holds(KEYS[1], 'string') and redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1], KEYS[2]) end
return 0
