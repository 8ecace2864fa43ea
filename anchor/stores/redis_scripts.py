"""The Lua scripts of :mod:`anchor.stores.redis_store` (each runs atomically on the server; see each one's comment
for its KEYS and ARGV). Kept apart from the store's Python so both stay readable."""

# KEYS: the buckets; ARGV: cost, then rate per second and burst of each bucket. All-or-nothing: the cost is taken
# from every bucket if each holds it, else from none. Returns {allowed (0/1), retry_after_s as a string} (Lua
# numbers returned to Redis are truncated to integers, hence the string); retry_after_s is the longest wait.
# A Lua function (prepended to the scripts that limit) taking ``cost`` from the buckets KEYS[first..first+n-1],
# whose rate and burst are ARGV[argi], ARGV[argi+1], ... All-or-nothing: the cost is taken from every bucket if each
# holds it, else from none. Returns the longest wait in seconds (0: taken). It uses the server's clock (TIME).
BUCKETS_LUA = """
local function take_buckets(first, n, argi, cost)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local levels = {}
  local retry = 0
  for i = 0, n - 1 do
    local key = KEYS[first + i]
    local rate = tonumber(ARGV[argi + 2 * i])
    local burst = tonumber(ARGV[argi + 2 * i + 1])
    local state = redis.call('HMGET', key, 'tokens', 'ts')
    local tokens = tonumber(state[1])
    local ts = tonumber(state[2])
    if tokens == nil or ts == nil then
      tokens = burst
      ts = now
    end
    local elapsed = now - ts
    if elapsed < 0 then elapsed = 0 end
    tokens = math.min(burst, tokens + elapsed * rate)
    levels[i] = tokens
    if tokens < cost then
      local wait = (cost - tokens) / rate
      if wait > retry then retry = wait end
    end
  end
  for i = 0, n - 1 do
    local key = KEYS[first + i]
    local rate = tonumber(ARGV[argi + 2 * i])
    local burst = tonumber(ARGV[argi + 2 * i + 1])
    local tokens = levels[i]
    if retry == 0 then tokens = tokens - cost end
    redis.call('HSET', key, 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
    redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
  end
  return retry
end
"""

# KEYS: the buckets; ARGV: cost, then rate per second and burst of each bucket. Returns {allowed (0/1),
# retry_after_s as a string} (Lua numbers returned to Redis are truncated to integers, hence the string).
TOKEN_BUCKET_LUA = (
    BUCKETS_LUA
    + """
local retry = take_buckets(1, #KEYS, 2, tonumber(ARGV[1]))
local allowed = 0
if retry == 0 then allowed = 1 end
return {allowed, string.format('%.6f', retry)}
"""
)


# The gateway's message queue (anchor.queue): an entry and its status record change together, atomically.
# Enqueue — KEYS: stream, status hash; ARGV: max backlog, status TTL ms, payload, then status field/value pairs.
# Refused (nil) when the backlog is full: acknowledged entries are deleted (below), so XLEN is the backlog and the
# MAXLEN backstop never trims an unread entry.
ENQUEUE_LUA = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[3])
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return id
"""

# Settle a read batch (anchor.queue: the consumer handed its entries to the node) — KEYS: 1 stream, 2.. status
# hashes; ARGV: 1 group, 2 status TTL ms, then per entry: its ID, the KEYS index of its status hash (0: none, just
# acknowledge and delete it), how many status field/value items follow, those items. Every status record is updated,
# every entry acknowledged and deleted, in one atomic step: the batch is settled wholly or not at all. Idempotent
# (a resent script writes the same values). Returns how many entries were pending (acknowledged now).
SETTLE_LUA = """
local ids = {}
local i = 3
while i + 2 <= #ARGV do
  local k = tonumber(ARGV[i + 1])
  local n = tonumber(ARGV[i + 2])
  if k > 0 and n > 0 then
    redis.call('HSET', KEYS[k], unpack(ARGV, i + 3, i + 2 + n))
    redis.call('PEXPIRE', KEYS[k], ARGV[2])
  end
  ids[#ids + 1] = ARGV[i]
  i = i + 3 + n
end
if #ids == 0 then return 0 end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('XDEL', KEYS[1], unpack(ids))
return acked
"""

# Give back what a stopping consumer began and did not hand over — KEYS: status hashes; ARGV: consumer, status TTL ms.
# A record still "handing" by this consumer becomes "queued" again (with its TTL), so another replica may claim the
# entry at once instead of leaving it in doubt until this one starts again. Returns how many were given back.
RELEASE_LUA = """
local n = 0
for i = 1, #KEYS do
  local st = redis.call('HMGET', KEYS[i], 'state', 'by')
  if st[1] == 'handing' and st[2] == ARGV[1] then
    redis.call('HSET', KEYS[i], 'state', 'queued')
    redis.call('HDEL', KEYS[i], 'by')
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    n = n + 1
  end
end
return n
"""

# Begin a hand-over to a node (gateway replicas sharing one consumer group) — KEYS: the status hashes of a read
# batch's entries; ARGV: consumer, status TTL ms, whether the entries were delivered before (1: from a pending list
# or claimed; 0: read new). A compare-and-set on each record: "queued" becomes "handing" by this consumer, so of two
# replicas holding the same entry (one claimed it from the other, which was only slow) one hands it over. The
# "handing" record has no TTL until it is settled (the settle script sets one): a replica gone for good cannot have
# its in-doubt record expire and the entry handed over again. No record: for a new entry (it waited longer than the
# TTL) as "queued"; for one delivered before, "unknown" — its hand-over may have begun and the record been lost
# (expired, or evicted by a Redis not on noeviction), so it must not be sent again.
# Returns {verdict, detail, verdict, detail, ...}, one pair per key in order: mine (begun now), again (this consumer
# began it before: a restart), other (another consumer's hand-over; detail names it), unknown (no record of an entry
# delivered before), settled (detail: the final state).
BEGIN_LUA = """
local out = {}
for i = 1, #KEYS do
  local st = redis.call('HMGET', KEYS[i], 'state', 'by')
  local state, by = st[1], st[2]
  if state == false and ARGV[3] == '1' then
    out[#out + 1] = 'unknown'
    out[#out + 1] = ''
  elseif state == false or state == 'queued' then
    redis.call('HSET', KEYS[i], 'state', 'handing', 'by', ARGV[1])
    redis.call('PERSIST', KEYS[i])
    out[#out + 1] = 'mine'
    out[#out + 1] = ''
  elseif state == 'handing' then
    if by == ARGV[1] then
      out[#out + 1] = 'again'
      out[#out + 1] = ''
    else
      out[#out + 1] = 'other'
      out[#out + 1] = by or ''
    end
  else
    out[#out + 1] = 'settled'
    out[#out + 1] = state
  end
end
return out
"""

# POST /v1/messages in one atomic step and one round trip (anchor.queue.MessageQueue.put_audited):
# KEYS: 1 audit stream, 2 message stream, 3 status hash, 4 the API key's cache entry, 5.. the per-IP buckets, then
#   the per-key bucket (or none).
# ARGV: 1 check the key cache (0/1), 2 how many per-IP buckets, 3 per-key bucket (0/1), 4 audit backlog bound,
#   5 message backlog bound, 6 status TTL ms, 7 payload, 8 audit event ID, 9 actor, 10 action, 11 target,
#   12 detail (JSON), 13 how many status field/value items, then those items, then rate/burst of each bucket,
#   then (last) the message stream's name (without the key prefix).
# In the order the gateway has always checked: the key's cached state (not cached or not active: 'miss', nothing
# spent, and the caller takes the slow path, which asks PostgreSQL), the per-IP buckets one after the other as the
# route's dependency takes them (an IPv6 client's /64, then its /48; 'ip', wait), the per-key
# bucket ('key', wait; the IP's tokens stay spent), the audit backlog ('audit_full': tokens spent, nothing written),
# then the message backlog — messages waiting for their audit row plus those waiting for the node; 'queue_full':
# the audit record is written without the message, as before). Otherwise the audit record is appended to the audit
# stream WITH the message (fields q: its stream, m: its payload) and the status record is written ("queued"). The
# message is not in the node's stream yet: the audit drain (anchor.audit_drain) appends it there only after the
# audit row committed in PostgreSQL (``audit_handover``), so no message reaches the node before its audit row is
# durable, whatever Redis's own durability (appendfsync, replicas).
# Idempotent per message: a status record already there (its key is the message's, new per request) means this
# script ran already (the client resent it after a timeout or a lost answer although the server had run it; both
# the native client and redis-py resend once): 'ok', nothing written or spent again.
# An 'ok' after a key-cache check also says how many milliseconds the key's cache entry has left (its PTTL), so the
# gateway can refresh it before it expires (anchor.gateway.fast_send) instead of every request in flight missing it
# at once and taking the slow path.
SEND_LUA = (
    BUCKETS_LUA
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then return {'ok', ''} end
local n_ip = tonumber(ARGV[2])
local n_key = tonumber(ARGV[3])
local key_ttl = -1
if ARGV[1] == '1' then
  local cached = redis.call('GET', KEYS[4])
  if not cached then return {'miss'} end
  local ok, state = pcall(cjson.decode, cached)
  if not ok or type(state) ~= 'table' or state['revoked'] ~= false then return {'miss'} end
  key_ttl = redis.call('PTTL', KEYS[4])
end
local n_status = tonumber(ARGV[13])
local argi = 14 + n_status
for i = 0, n_ip - 1 do
  local wait = take_buckets(5 + i, 1, argi + 2 * i, 1)
  if wait > 0 then return {'ip', string.format('%.6f', wait)} end
end
if n_key > 0 then
  local wait = take_buckets(5 + n_ip, 1, argi + 2 * n_ip, 1)
  if wait > 0 then return {'key', string.format('%.6f', wait)} end
end
local audit_len = redis.call('XLEN', KEYS[1])
if audit_len >= tonumber(ARGV[4]) then return {'audit_full'} end
local t = redis.call('TIME')
local at_ms = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
if redis.call('XLEN', KEYS[2]) + audit_len >= tonumber(ARGV[5]) then
  redis.call('XADD', KEYS[1], '*', 'eid', ARGV[8], 'at_ms', at_ms, 'actor', ARGV[9],
    'action', ARGV[10], 'target', ARGV[11], 'detail', ARGV[12])
  return {'queue_full'}
end
local id = redis.call('XADD', KEYS[1], '*', 'eid', ARGV[8], 'at_ms', at_ms, 'actor', ARGV[9],
  'action', ARGV[10], 'target', ARGV[11], 'detail', ARGV[12], 'q', ARGV[#ARGV], 'm', ARGV[7])
redis.call('HSET', KEYS[3], unpack(ARGV, 14, 13 + n_status))
redis.call('PEXPIRE', KEYS[3], ARGV[6])
return {'ok', id, key_ttl}
"""
)

# Refresh an API key's cache entry with the state PostgreSQL gave (KEYS: 1 the entry; ARGV: 1 the state as JSON,
# 2 TTL ms, 3 '1' if that state is revoked, 4 the server's TIME in ms before the read or -1). A revoked state is
# always written, for its whole TTL. An active one expires TTL after its read (ARGV[4]), not after this write: a
# slow statement or a stalled or abandoned worker thread shortens its life, and one that arrives a TTL or more after
# its read is not written at all — so a revocation's entry (written after the commit, so after the read, for at
# least TTL) always outlives the reads that came before it. A slow PostgreSQL still fills the cache (for what is left
# of the TTL) instead of every request reading it again. An active one replaces an entry
# only while it still says active (a revocation through the anchor writes "revoked" into the entry after
# PostgreSQL, so a refresh that read PostgreSQL before it cannot overwrite it while it lasts), or fills a missing
# entry (the slow path's fill goes through this script too). A late "active" after the revoked entry expired is
# harmless only because the caller caches "revoked" for at least the tokens' lifetime
# (anchor.gateway.stores_adapter).
# Returns 1 if written.
KEY_REFRESH_LUA = """
local px = tonumber(ARGV[2])
if ARGV[3] ~= '1' then
  local read_at = tonumber(ARGV[4])
  if read_at >= 0 then
    local t = redis.call('TIME')
    px = math.min(px, read_at + px - (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
    if px <= 0 then return 0 end
  end
  local cached = redis.call('GET', KEYS[1])
  if cached then
    local ok, state = pcall(cjson.decode, cached)
    if not ok or type(state) ~= 'table' or state['revoked'] ~= false then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
return 1
"""

# After the audit drain committed a batch of audit rows in PostgreSQL: hand the messages they carry to the node's
# streams and acknowledge + delete the audit entries, as one atomic step (a drain that dies before it redoes the
# batch: the insert is idempotent, and this step runs once). Each entry is acknowledged on its own and its message
# handed over only if this XACK acknowledged it (returned 1): a drain that stalled past the claim time while another
# claimed and handed over the same entries hands nothing over again, and a resent script (redis-py retries once
# after a timeout) changes nothing. A message is also handed over at most once per event ID (SET NX of
# ``aiv:ho:<audit stream>:<eid>`` for the status TTL): two audit entries of one send (a resent script) deliver it once.
# KEYS: 1 audit stream, 2.. the message streams and dedupe keys named by the entries. ARGV: 1 group, 2 dedupe TTL
# ms, then per entry: its ID, the KEYS index of its message stream (0: no message), the KEYS index of its dedupe
# key (0: none), its payload. Returns how many messages were handed over.
# The message streams are not trimmed here: the send script bounded what waits (audit + stream <= queue_max).
HANDOVER_LUA = """
local handed = 0
local i = 3
while i + 3 <= #ARGV do
  local q = tonumber(ARGV[i + 1])
  local d = tonumber(ARGV[i + 2])
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    if q > 0 and (d == 0 or redis.call('SET', KEYS[d], '1', 'NX', 'PX', ARGV[2])) then
      redis.call('XADD', KEYS[q], '*', 'm', ARGV[i + 3])
      handed = handed + 1
    end
  end
  i = i + 4
end
return handed
"""
