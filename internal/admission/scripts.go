package admission

import "github.com/redis/go-redis/v9"

// The Lua scripts behind shared mode. Each runs atomically in Redis, so a
// check and the charge it leads to cannot interleave with another
// replica's. Times come from Redis's own clock (TIME), so replicas with
// skewed clocks still agree. Every key a script touches is in KEYS.

// loginScript forgets the source address's failures (the token was good)
// and admits a login: at once if its token was admitted before, else if
// every rate allows it, and only then charges them all. The GCRA
// arithmetic is that of gcra in memory.go, in microseconds.
//
//	KEYS: 1 admitted token, 2 per-principal GCRA, 3 principal seen marker,
//	      4 principals GCRA, 5 new logins GCRA, 6 address failures, 7 address back-off
//	ARGV: 1 token TTL ms, 2 per-principal rate, 3 principals rate, 4 new logins rate
//	      (rates per second; 0 is off), 5 principal window ms
//	returns {0} admitted, {1} reused, {2, limit 1|2|3, wait µs} refused
var loginScript = redis.NewScript(`
redis.call('DEL', KEYS[6], KEYS[7])
if redis.call('EXISTS', KEYS[1]) == 1 then return {1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pending = {}
local function take(key, rate)
  local interval = math.floor(1000000 / rate)
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  local next = tat + interval
  local allow_at = next - interval * rate
  if now < allow_at then return allow_at - now end
  table.insert(pending, {key, next})
  return 0
end
local rate = tonumber(ARGV[2])
if rate > 0 then
  local wait = take(KEYS[2], rate)
  if wait > 0 then return {2, 1, wait} end
end
local new_principal = false
rate = tonumber(ARGV[3])
if rate > 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  new_principal = true
  local wait = take(KEYS[4], rate)
  if wait > 0 then return {2, 2, wait} end
end
rate = tonumber(ARGV[4])
if rate > 0 then
  local wait = take(KEYS[5], rate)
  if wait > 0 then return {2, 3, wait} end
end
for _, p in ipairs(pending) do
  redis.call('SET', p[1], string.format('%d', p[2]), 'PX', math.floor((p[2] - now) / 1000) + 1)
end
if new_principal then redis.call('SET', KEYS[3], 1, 'PX', ARGV[5]) end
redis.call('SET', KEYS[1], 1, 'PX', ARGV[1])
return {0}
`)

// failScript counts a failed login from an address and starts its
// back-off or block.
//
//	KEYS: 1 failures, 2 back-off, 3 block
//	ARGV: 1 window ms, 2 block after, 3 block for ms, 4 back-off after,
//	      5 back-off base ms, 6 back-off ceiling ms
//	returns {failures, 0, 0}, {failures, 1, back-off ms} or {failures, 2, block ms}
var failScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local block_after = tonumber(ARGV[2])
if block_after > 0 and n >= block_after then
  redis.call('SET', KEYS[3], n, 'PX', ARGV[3])
  redis.call('DEL', KEYS[1], KEYS[2])
  return {n, 2, tonumber(ARGV[3])}
end
local backoff_after = tonumber(ARGV[4])
local base = tonumber(ARGV[5])
if backoff_after > 0 and base > 0 and n >= backoff_after then
  local d = base * 2 ^ math.min(n - backoff_after, 40)
  local ceiling = tonumber(ARGV[6])
  if d > ceiling then d = ceiling end
  d = math.floor(d)
  redis.call('SET', KEYS[2], n, 'PX', d)
  return {n, 1, d}
end
return {n, 0, 0}
`)

// admitScript takes a connection slot for a database user if its source
// address is not backing off and the caps allow it. Connections are
// counted in hash fields per replica; a field of a replica whose heartbeat
// has lapsed no longer counts and is removed.
//
//	KEYS: 1 instance connections, 2 user connections, 3 replica heartbeats, 4 address back-off
//	ARGV: 1 replica id, 2 max connections, 3 max per user (0 is off), 4 key TTL ms
//	returns {0} admitted, {1} max_connections reached, {2} max_connections_per_user
//	reached, {3, ms} the address backs off for ms more
var admitScript = redis.NewScript(`
local backoff = redis.call('PTTL', KEYS[4])
if backoff > 0 then return {3, backoff} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function total(key)
  local sum = 0
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local replica, n = all[i], tonumber(all[i + 1]) or 0
    if replica == ARGV[1] then
      sum = sum + n
    elseif (tonumber(redis.call('HGET', KEYS[3], replica) or '0') or 0) > now then
      sum = sum + n
    else
      redis.call('HDEL', key, replica)
    end
  end
  return sum
end
local max_conns, max_user = tonumber(ARGV[2]), tonumber(ARGV[3])
if max_conns > 0 and total(KEYS[1]) >= max_conns then return {1} end
if max_user > 0 and total(KEYS[2]) >= max_user then return {2} end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {0}
`)

// releaseScript gives a connection slot back.
//
//	KEYS: 1 instance connections, 2 user connections
//	ARGV: 1 replica id
var releaseScript = redis.NewScript(`
for i = 1, 2 do
  if redis.call('HINCRBY', KEYS[i], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[i], ARGV[1]) end
end
return 0
`)

// heartbeatScript marks a replica alive until TTL from now, and forgets
// replicas whose heartbeat lapsed long ago.
//
//	KEYS: 1 replica heartbeats
//	ARGV: 1 replica id, 2 TTL ms
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < now - 3600000 then redis.call('HDEL', KEYS[1], all[i]) end
end
return 0
`)
