#!lua name=seigo_kv_2
-- seigo's Redis participant: every step of the two-phase contract is one function here, run
-- atomically by the server (doc/redis.md has the key layout and the rules). Loaded with
-- FUNCTION LOAD REPLACE by the adapter (src/redis/redis_participant.cc); functions survive
-- restarts (they are in the AOF), EVAL's script cache does not.
--
-- Every function validates everything before its first write: a script that fails at run time
-- keeps the writes it made so far.
--
-- ARGV[1] of every function is the deployment's key prefix "seigo:<deployment>:"; the keys
-- below are written relative to it (P), except the four that guard user keys: those are
-- shared by every deployment on the instance (G = "seigo:"), since deployments may touch the
-- same user keys:
--   G..'lock'      hash  key -> gid: written keys locked by a prepared intent
--   G..'rlock'     hash  key -> count: keys read by prepared intents (shared read locks)
--   G..'esclo'     hash  key -> sum of the pending negative bounded increments
--   G..'eschi'     hash  key -> sum of the pending positive bounded increments
--   P..'x:'..gid   hash  the intent of a prepared branch: xid (gtrid, bqual), deadline, ops
--   P..'prepared'  zset  gid -> deadline: every prepared intent (the resolver's index)
--   P..'t:'..gid   str   tombstone: the gid was rolled back here (expires after its deadline)
--   P..'c:'..gid   str   the branch of gid committed here (expires 1 h after GC forgot it)
--   P..'d:'..gid   hash  a decision: o ('C'/'A'), s (participants), dl (deadline), at
--   P..'decisions' zset  gid -> deadline: decisions kept until garbage collection
--   P..'meta'      hash  index: this instance's position in the deployment; epoch: random,
--                         set once (a new value means the instance lost its data)
--
-- Versioning: the library name (seigo_kv_2) and the function names (seigo2_*) change together
-- whenever the arguments or the key layout change, so that coordinators of two seigo versions
-- on one instance never run each other's functions. (2: the shared G namespace and read
-- locks. Intents prepared by version 1 are finished by version-1 coordinators only: drain
-- them — `seigo recover` with the old binary — before upgrading.)

local G = 'seigo:'

-- Numbers go to Redis as integer text: a Lua number would be sent as "%.14g".
local function N(x)
  return string.format('%d', x)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fail(kind, msg)
  return redis.error_reply('SEIGO_' .. kind .. ' ' .. msg)
end

local MAX_EXACT = 4503599627370496  -- 2^52: sums of two stay exact in doubles

-- `call` is redis.call (a read of a transaction: a wrong type is the caller's error) or
-- redis.pcall (validation: the key's type changed since the read, which is a conflict).
local function read_op(op, key, a, call)
  call = call or redis.call
  if op == 'get' then return call('GET', key) end
  if op == 'hget' then return call('HGET', key, a) end
  if op == 'zscore' then return call('ZSCORE', key, a) end
  if op == 'ztop' then
    return call('ZRANGE', key, 0, tonumber(a) - 1, 'REV', 'WITHSCORES')
  end
  error('seigo: unknown read ' .. tostring(op))
end

local function digest(reply)
  return redis.sha1hex(cmsgpack.pack({reply}))
end

-- Why another transaction stands on `key` (nil if none), for a `what` of 'read', 'write' or
-- 'incr': a write lock of a prepared intent stops all three; a read lock (another prepared
-- intent read the key) stops writes and increments; pending increments stop reads and writes
-- (increments are checked against them by escrow instead).
local function taken(key, gid, what)
  local l = redis.call('HGET', G .. 'lock', key)
  if l and l ~= gid then return 'is locked by transaction ' .. l end
  if what ~= 'read' and tonumber(redis.call('HGET', G .. 'rlock', key) or '0') > 0 then
    return 'is read by a transaction that is committing'
  end
  if what ~= 'incr' then
    local lo = tonumber(redis.call('HGET', G .. 'esclo', key) or '0')
    local hi = tonumber(redis.call('HGET', G .. 'eschi', key) or '0')
    if lo ~= 0 or hi ~= 0 then return 'has pending increments of other transactions' end
  end
  return nil
end

local function type_ok(key, want)
  local t = redis.call('TYPE', key)['ok']
  return t == 'none' or t == want, t
end

-- Exactly the integers INCRBY accepts ("007", "-0", "+1", "1e3" are not), within +-2^52.
local function is_integer(v)
  if v == nil or v == false then return true end
  local n = tonumber(v)
  return n ~= nil and n == math.floor(n) and n <= MAX_EXACT and n >= -MAX_EXACT and
         string.format('%d', n) == v
end

-- Parses the branch body at ARGV[base...]: reads, writes and bounded increments, and checks
-- them. Returns (body, nil) or (nil, error reply).
local function validate(P, gid, argv, base)
  local nr, nw, ni = tonumber(argv[base]), tonumber(argv[base + 1]), tonumber(argv[base + 2])
  local k = base + 3
  local body = {w = {}, i = {}, r = {}}
  local read = {}
  for _ = 1, nr do
    local op, key, a, want = argv[k], argv[k + 1], argv[k + 2], argv[k + 3]
    k = k + 4
    local why = taken(key, gid, 'read')
    if why then return nil, fail('CONFLICT', key .. ' (read) ' .. why) end
    if not read[key] then
      read[key] = true
      table.insert(body.r, key)
    end
    local got = read_op(op, key, a, redis.pcall)
    if (type(got) == 'table' and got.err) or digest(got) ~= want then
      return nil, fail('CONFLICT', key .. ' changed since this transaction read it')
    end
  end
  -- The type each key has after this body's earlier writes (a DEL or SET earlier in the same
  -- transaction decides it, not the key's type now).
  local after = {}
  local function fits(key, want)
    if after[key] then return after[key] == 'none' or after[key] == want, after[key] end
    return type_ok(key, want)
  end
  for _ = 1, nw do
    local op, key, a, b = argv[k], argv[k + 1], argv[k + 2], argv[k + 3]
    k = k + 4
    local why = taken(key, gid, 'write')
    if why then return nil, fail('CONFLICT', key .. ' ' .. why) end
    if op == 'hset' or op == 'hdel' then
      local ok, t = fits(key, 'hash')
      if not ok then return nil, fail('TYPE', key .. ' holds a ' .. t .. ', not a hash') end
      after[key] = 'hash'
    elseif op == 'zadd' or op == 'zrem' then
      local ok, t = fits(key, 'zset')
      if not ok then return nil, fail('TYPE', key .. ' holds a ' .. t .. ', not a sorted set') end
      local sc = tonumber(b)
      if op == 'zadd' and (sc == nil or sc ~= sc or sc == math.huge or sc == -math.huge or
                           string.find(b, '^[-+]?[%d.]') == nil) then
        return nil, fail('TYPE', 'bad score ' .. b)
      end
      after[key] = 'zset'
    elseif op == 'set' then
      after[key] = 'string'
    elseif op == 'del' then
      after[key] = 'none'
    else
      return nil, fail('TYPE', 'unknown write ' .. tostring(op))
    end
    table.insert(body.w, {op, key, a, b})
  end
  for _ = 1, ni do
    local key, delta, min, max, reason = argv[k], tonumber(argv[k + 1]), tonumber(argv[k + 2]),
                                         tonumber(argv[k + 3]), argv[k + 4]
    k = k + 5
    min = math.max(min, -MAX_EXACT)
    max = math.min(max, MAX_EXACT)
    if after[key] then
      return nil, fail('TYPE', key .. ' is written and incremented in one transaction')
    end
    local why = taken(key, gid, 'incr')
    if why then return nil, fail('CONFLICT', key .. ' ' .. why) end
    if delta > MAX_EXACT or delta < -MAX_EXACT then
      return nil, fail('TYPE', key .. ': the increment is beyond +-2^52')
    end
    local ok, t = type_ok(key, 'string')
    if not ok then return nil, fail('TYPE', key .. ' holds a ' .. t .. ', not a counter') end
    local v = redis.call('GET', key)
    if not is_integer(v) then
      return nil, fail('TYPE', key .. ' holds ' .. string.sub(v, 1, 40) .. ', not an integer')
    end
    local cur = tonumber(v or '0')
    -- is_integer has checked +-2^52.
    local new = cur + delta
    if new < min or new > max then
      return nil, fail('GUARD', reason .. ' (' .. key .. ' is ' .. string.format('%d', cur) ..
                                ', ' .. string.format('%+d', delta) .. ' is outside [' ..
                                string.format('%d', min) .. ', ' .. string.format('%d', max) ..
                                '])')
    end
    local lo = tonumber(redis.call('HGET', G .. 'esclo', key) or '0')
    local hi = tonumber(redis.call('HGET', G .. 'eschi', key) or '0')
    if cur + lo + math.min(delta, 0) < min or cur + hi + math.max(delta, 0) > max then
      return nil, fail('CONFLICT', key .. ': other transactions\' pending increments could ' ..
                                   'cross the bound')
    end
    table.insert(body.i, {key, delta})
  end
  return body, nil
end

-- One staged write. `call` is redis.call, or redis.pcall where a failure must not stop the
-- rest (the commit of an intent whose key another client changed meanwhile).
local function apply_write(w, call)
  local op, key, a, b = w[1], w[2], w[3], w[4]
  if op == 'set' then return call('SET', key, a)
  elseif op == 'del' then return call('DEL', key)
  elseif op == 'hset' then return call('HSET', key, a, b)
  elseif op == 'hdel' then return call('HDEL', key, a)
  elseif op == 'zadd' then return call('ZADD', key, b, a)
  elseif op == 'zrem' then return call('ZREM', key, a)
  end
end

local function counter(h, key, by)
  redis.call('HINCRBY', G .. h, key, N(by))
  if tonumber(redis.call('HGET', G .. h, key)) == 0 then redis.call('HDEL', G .. h, key) end
end

local function reserve(key, delta, sign)
  if delta < 0 then counter('esclo', key, sign * delta)
  elseif delta > 0 then counter('eschi', key, sign * delta) end
end

-- Releases a prepared intent's locks and reservations; applies it first when `commit`.
-- Returns the number of writes that failed: 0, unless another client changed a locked key's
-- type behind seigo's back. Even then the intent is finished exactly once (a retry would
-- apply the increments again), and the caller reports it.
local function finish(P, gid, commit)
  local x = P .. 'x:' .. gid
  local packed = redis.call('HGET', x, 'ops')
  local body = cmsgpack.unpack(packed)
  local failed = 0
  local function ok(r)
    if type(r) == 'table' and r.err then failed = failed + 1 end
  end
  for _, w in ipairs(body.w) do
    if commit then ok(apply_write(w, redis.pcall)) end
    if redis.call('HGET', G .. 'lock', w[2]) == gid then redis.call('HDEL', G .. 'lock', w[2]) end
  end
  for _, inc in ipairs(body.i) do
    if commit then ok(redis.pcall('INCRBY', inc[1], N(inc[2]))) end
    reserve(inc[1], inc[2], -1)
  end
  for _, key in ipairs(body.r or {}) do counter('rlock', key, -1) end
  redis.call('DEL', x)
  redis.call('ZREM', P .. 'prepared', gid)
  return failed
end

-- seigo_read(P, op, key, arg) -> {value, digest}: a read of a transaction.
local function seigo_read(keys, argv)
  local P, op, key, a = argv[1], argv[2], argv[3], argv[4]
  local why = taken(key, '', 'read')
  if why then return fail('CONFLICT', key .. ' ' .. why) end
  local r = read_op(op, key, a)
  return {r, digest(r)}
end

-- seigo_validate(P, 0 0 0 + reads): the end of a read-only transaction.
local function seigo_validate(keys, argv)
  local _, err = validate(argv[1], '', argv, 2)
  if err then return err end
  return 'OK'
end

-- seigo_prepare(P, gid, gtrid, bqual, deadline, tomb, body): stores the intent.
local function seigo_prepare(keys, argv)
  local P, gid, gtrid, bqual, deadline = argv[1], argv[2], argv[3], argv[4], tonumber(argv[5])
  local x = P .. 'x:' .. gid
  if redis.call('EXISTS', x) == 1 then return 'OK' end  -- a repeated request
  if redis.call('EXISTS', P .. 't:' .. gid) == 1 then
    return fail('REFUSED', 'transaction ' .. gid .. ' was rolled back here')
  end
  if now_ms() > deadline then
    return fail('REFUSED', 'transaction ' .. gid .. ' is past its deadline')
  end
  local body, err = validate(P, gid, argv, 6)
  if err then return err end
  -- Writes from here on.
  -- Every key read or written stays locked until the decision: without the read locks, two
  -- transactions that each read what the other writes, on two instances, could both commit
  -- (write skew).
  for _, w in ipairs(body.w) do redis.call('HSET', G .. 'lock', w[2], gid) end
  for _, key in ipairs(body.r) do counter('rlock', key, 1) end
  for _, inc in ipairs(body.i) do reserve(inc[1], inc[2], 1) end
  redis.call('HSET', x, 'gtrid', gtrid, 'bqual', bqual, 'deadline', argv[5],
             'ops', cmsgpack.pack(body))
  redis.call('ZADD', P .. 'prepared', argv[5], gid)
  return 'OK'
end

-- seigo_commit(P, gid) -> 'OK' | 'DONE' (committed before) | 'LOST' (no trace at all)
local function seigo_commit(keys, argv)
  local P, gid = argv[1], argv[2]
  if redis.call('EXISTS', P .. 'x:' .. gid) == 1 then
    local failed = finish(P, gid, true)
    redis.call('SET', P .. 'c:' .. gid, '1')
    if failed > 0 then return 'PARTIAL ' .. failed end
    return 'OK'
  end
  if redis.call('EXISTS', P .. 'c:' .. gid) == 1 then return 'DONE' end
  if redis.call('EXISTS', P .. 't:' .. gid) == 1 then
    return fail('ROLLEDBACK', 'transaction ' .. gid .. ' was rolled back here')
  end
  return 'LOST'
end

-- seigo_rollback(P, gid, tomb_until_ms) -> 'OK' | error when the branch had committed
local function seigo_rollback(keys, argv)
  local P, gid, until_ms = argv[1], argv[2], tonumber(argv[3])
  if redis.call('EXISTS', P .. 'c:' .. gid) == 1 then
    return fail('COMMITTED', 'transaction ' .. gid .. ' had committed here')
  end
  if redis.call('EXISTS', P .. 'x:' .. gid) == 1 then finish(P, gid, false) end
  local ttl = math.max(until_ms - now_ms(), 1000)
  redis.call('SET', P .. 't:' .. gid, '1', 'PX', N(ttl))
  return 'OK'
end

-- seigo_decide(P, gid, deadline, participants, single, keep_ms, body): the commit point of a
-- transaction this instance decides: validates the body, applies it and records the decision,
-- all at once. Refused when a decision exists (a fence) or the deadline has passed.
local function seigo_decide(keys, argv)
  local P, gid, deadline = argv[1], argv[2], tonumber(argv[3])
  local d = P .. 'd:' .. gid
  if redis.call('EXISTS', d) == 1 then
    return fail('REFUSED', 'transaction ' .. gid .. ' already has a decision (fenced)')
  end
  local now = now_ms()
  if now > deadline then return fail('REFUSED', 'transaction ' .. gid .. ' is past its deadline') end
  local body, err = validate(P, gid, argv, 7)
  if err then return err end
  -- Validated above and atomic: none of these can fail.
  for _, w in ipairs(body.w) do apply_write(w, redis.call) end
  for _, inc in ipairs(body.i) do redis.call('INCRBY', inc[1], N(inc[2])) end
  redis.call('HSET', d, 'o', 'C', 's', argv[4], 'dl', argv[3], 'at', N(now))
  if argv[5] == '1' then
    -- Only this instance took part: nobody needs the record after the coordinator's fence
    -- window, so it expires instead of waiting for garbage collection.
    redis.call('PEXPIRE', d, N(math.max(deadline + tonumber(argv[6]) - now, 1000)))
  else
    redis.call('ZADD', P .. 'decisions', argv[3], gid)
  end
  return 'OK'
end

-- seigo_fence(P, gid, deadline, participants, by_coordinator, window_ms) -> 'C' | 'A' | 'BUSY'
-- (participant.h, FenceAbort).
local function seigo_fence(keys, argv)
  local P, gid, deadline, window = argv[1], argv[2], tonumber(argv[3]), tonumber(argv[6])
  local d = P .. 'd:' .. gid
  local o = redis.call('HGET', d, 'o')
  if o then return o end
  local now = now_ms()
  if argv[5] == '1' then
    if now >= deadline + window then return 'BUSY' end
  else
    if now < deadline then return 'BUSY' end
    if now >= deadline + window then return 'A' end  -- no commit can appear any more
  end
  redis.call('HSET', d, 'o', 'A', 's', argv[4], 'dl', argv[3], 'at', N(now))
  redis.call('ZADD', P .. 'decisions', argv[3], gid)
  return 'A'
end

-- seigo_decisions(P, gid...) -> {o, s, dl, at} per gid ('' when none)
local function seigo_decisions(keys, argv)
  local out = {}
  for j = 2, #argv do
    local v = redis.call('HMGET', argv[1] .. 'd:' .. argv[j], 'o', 's', 'dl', 'at')
    for f = 1, 4 do table.insert(out, v[f] or '') end
  end
  return out
end

-- seigo_expired(P, retention_ms, limit) -> {gid, o, s, dl, at, ...}
local function seigo_expired(keys, argv)
  local P = argv[1]
  local upto = now_ms() - tonumber(argv[2])
  local gids = redis.call('ZRANGE', P .. 'decisions', '-inf', N(upto), 'BYSCORE', 'LIMIT', 0,
                          argv[3])
  local out = {}
  for _, g in ipairs(gids) do
    local v = redis.call('HMGET', P .. 'd:' .. g, 'o', 's', 'dl', 'at')
    table.insert(out, g)
    for f = 1, 4 do table.insert(out, v[f] or '') end
  end
  return out
end

-- seigo_forget(P, gid...): decisions gone.
local function seigo_forget(keys, argv)
  for j = 2, #argv do
    redis.call('DEL', argv[1] .. 'd:' .. argv[j])
    redis.call('ZREM', argv[1] .. 'decisions', argv[j])
  end
  return 'OK'
end

-- seigo_forget_branches(P, gid...): commit markers expire in an hour (not at once: a phase-2
-- call or a resolver pass stalled until now must still learn DONE, not LOST).
local function seigo_forget_branches(keys, argv)
  for j = 2, #argv do redis.call('PEXPIRE', argv[1] .. 'c:' .. argv[j], 3600000) end
  return 'OK'
end

-- seigo_recover(P) -> {gtrid, bqual, ...} of every prepared intent
local function seigo_recover(keys, argv)
  local P = argv[1]
  local out = {}
  for _, g in ipairs(redis.call('ZRANGE', P .. 'prepared', 0, -1)) do
    local v = redis.call('HMGET', P .. 'x:' .. g, 'gtrid', 'bqual')
    if v[1] then
      table.insert(out, v[1])
      table.insert(out, v[2])
    end
  end
  return out
end

-- seigo_probe(P, gid...) -> 'O' (intent), 'C' (committed marker) or 'N' per gid
local function seigo_probe(keys, argv)
  local out = {}
  for j = 2, #argv do
    if redis.call('EXISTS', argv[1] .. 'x:' .. argv[j]) == 1 then table.insert(out, 'O')
    elseif redis.call('EXISTS', argv[1] .. 'c:' .. argv[j]) == 1 then table.insert(out, 'C')
    else table.insert(out, 'N') end
  end
  return out
end

-- seigo_claim(P, index, epoch) -> {index, epoch}: the index this instance holds for the
-- deployment and the epoch of its data, both set now if there are none (a new instance, or
-- one that lost its data: the caller compares the epoch with what it knew).
local function seigo_claim(keys, argv)
  redis.call('HSETNX', argv[1] .. 'meta', 'index', argv[2])
  redis.call('HSETNX', argv[1] .. 'meta', 'epoch', argv[3])
  return redis.call('HMGET', argv[1] .. 'meta', 'index', 'epoch')
end

redis.register_function{function_name = 'seigo2_read', callback = seigo_read, flags = {'no-writes'}}
redis.register_function{function_name = 'seigo2_validate', callback = seigo_validate,
                        flags = {'no-writes'}}
redis.register_function('seigo2_prepare', seigo_prepare)
redis.register_function('seigo2_commit', seigo_commit)
redis.register_function('seigo2_rollback', seigo_rollback)
redis.register_function('seigo2_decide', seigo_decide)
redis.register_function('seigo2_fence', seigo_fence)
redis.register_function{function_name = 'seigo2_decisions', callback = seigo_decisions,
                        flags = {'no-writes'}}
redis.register_function{function_name = 'seigo2_expired', callback = seigo_expired,
                        flags = {'no-writes'}}
redis.register_function('seigo2_forget', seigo_forget)
redis.register_function('seigo2_forget_branches', seigo_forget_branches)
redis.register_function{function_name = 'seigo2_recover', callback = seigo_recover,
                        flags = {'no-writes'}}
redis.register_function{function_name = 'seigo2_probe', callback = seigo_probe,
                        flags = {'no-writes'}}
redis.register_function('seigo2_claim', seigo_claim)
