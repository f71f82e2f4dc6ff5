//! The Lua scripts every read and write of a key goes through, and the checks on what they
//! return. Each script reads a key with `TYPE` and `STRLEN` before anything else, so no reply
//! ever carries more than 64 bytes of a value that is not a word (or 1 KB of a configuration),
//! whatever a client with write access stored there, and a key of another type is overwritten
//! (`SET` replaces any type) instead of failing the script.

use crate::Snapshot;

/// Reads a key as a word: `word(key)` is `'word', text`, `'none', false`, or `'bad', what` (at
/// most 64 bytes of it). `sync(key, ours, seed, ttl)` adopts a word, repairs a bad value with
/// `ours` (and publishes it), and writes `ours` where the key is missing if `seed` is `'seed'`.
/// It returns `{0, word}`, `{1, ''}` (missing) or `{2, what}` (repaired).
const PRELUDE: &str = r"
local function word(key)
  local t = redis.call('TYPE', key).ok
  if t == 'none' then return 'none', false end
  if t ~= 'string' then return 'bad', '<a ' .. t .. '>' end
  local n = redis.call('STRLEN', key)
  if n == 0 or n > 20 then return 'bad', redis.call('GETRANGE', key, 0, 63) end
  local v = redis.call('GET', key)
  if not string.match(v, '^%d+$') or (n == 20 and v > '18446744073709551615') then return 'bad', v end
  return 'word', v
end
local function sync(key, ours, seed, ttl)
  local kind, cur = word(key)
  if kind == 'word' then return {0, cur} end
  if kind == 'none' then
    if seed == 'seed' then redis.call('SET', key, ours, 'PX', ttl) end
    return {1, ''}
  end
  redis.call('SET', key, ours, 'PX', ttl)
  redis.call('PUBLISH', key, ours)
  return {2, cur}
end
";

/// The compare-and-set every write of a word goes through: `KEYS[1]` the word, `ARGV` what the
/// caller last saw, the new word, the TTL in ms. A missing key (Redis restarted empty, or the
/// key expired) and a value that is not a word are taken to hold what the caller last saw, so
/// the first host to write re-seeds or repairs it. Returns `{1, new}` (written), `{3, what}`
/// (written over a bad value) or `{0, word}` (lost to another host).
const CAS_BODY: &str = r"
local kind, found = word(KEYS[1])
if kind == 'word' and found ~= ARGV[1] then return {0, found} end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('PUBLISH', KEYS[1], ARGV[2])
if kind == 'bad' then return {3, found} end
return {1, ARGV[2]}
";

/// Reads words back (the refresh, a resync, a published hint): `KEYS` the words, `ARGV[1]` the
/// TTL, `ARGV[2]` `'seed'` or `'keep'`, `ARGV[2 + i]` this host's word for `KEYS[i]`. One
/// `sync` reply per key.
const SYNC_BODY: &str = r"
local out = {}
for i, key in ipairs(KEYS) do out[i] = sync(key, ARGV[2 + i], ARGV[2], ARGV[1]) end
return out
";

/// Attaching a breaker: `KEYS` its word and its configuration record, `ARGV` the TTL, this
/// host's word, this host's configuration. Reads the word (never seeding a missing one) and
/// swaps the configuration record. Returns the word's `sync` reply and at most 1 KB of the
/// previous record (`false` if none).
const ATTACH_BODY: &str = r"
local out = sync(KEYS[1], ARGV[2], 'keep', ARGV[1])
local t = redis.call('TYPE', KEYS[2]).ok
local theirs = false
if t == 'string' then theirs = redis.call('GETRANGE', KEYS[2], 0, 1023)
elseif t ~= 'none' then theirs = '<a ' .. t .. '>' end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[1])
out[3] = theirs
return out
";

/// The most keys one `SYNC` reads, so that one reply stays small whatever the number of breakers.
pub(super) const SYNC_BATCH: usize = 256;

/// The three scripts, hashed once.
pub(super) struct Scripts {
    pub(super) cas: redis::Script,
    pub(super) sync: redis::Script,
    pub(super) attach: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let script = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Scripts { cas: script(CAS_BODY), sync: script(SYNC_BODY), attach: script(ATTACH_BODY) }
    }

    /// Loads every script (`SCRIPT LOAD`), so that a user who may not run them is refused at once.
    pub(super) fn load(&self, c: &mut redis::Connection) -> redis::RedisResult<()> {
        for script in [&self.cas, &self.sync, &self.attach] {
            script.prepare_invoke().load(c)?;
        }
        Ok(())
    }
}

/// What a compare-and-set did.
pub(super) enum Cas {
    Written,
    /// Written over a value that was not a word (at most 64 bytes of it, as text).
    Repaired(String),
    Lost(Snapshot),
}

impl Cas {
    pub(super) fn from_reply((code, value): (i64, Vec<u8>)) -> redis::RedisResult<Cas> {
        match code {
            1 => Ok(Cas::Written),
            3 => Ok(Cas::Repaired(describe(&value))),
            0 => parse_word(&value).map(Cas::Lost).ok_or_else(|| unexpected(&value)),
            _ => Err(unexpected(&value)),
        }
    }
}

/// What reading a word back found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found {
    Word(Snapshot),
    Missing,
    /// A value that was not a word, overwritten with this host's (at most 64 bytes of it).
    Repaired(String),
}

impl Found {
    pub(super) fn from_reply((code, value): (i64, Vec<u8>)) -> redis::RedisResult<Found> {
        match code {
            0 => parse_word(&value).map(Found::Word).ok_or_else(|| unexpected(&value)),
            1 => Ok(Found::Missing),
            2 => Ok(Found::Repaired(describe(&value))),
            _ => Err(unexpected(&value)),
        }
    }
}

/// A word as the scripts write it: 1 to 20 decimal digits, within `u64`. Nothing else is one
/// (no sign, no space), so a value is a word here exactly when it is one in the scripts.
pub(super) fn parse_word(text: &[u8]) -> Option<Snapshot> {
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse::<u64>().ok().map(Snapshot::from_bits)
}

/// At most 64 characters of what a key held, for an event.
pub(super) fn describe(value: &[u8]) -> String {
    String::from_utf8_lossy(&value[..value.len().min(64)]).chars().take(64).collect()
}

/// A reply none of our scripts gives: the server is not running them as written.
fn unexpected(value: &[u8]) -> redis::RedisError {
    (redis::ErrorKind::TypeError, "unexpected reply from the circuit breaker script", describe(value)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_decimal_u64s_are_words() {
        assert_eq!(parse_word(b"0"), Some(Snapshot::from_bits(0)));
        assert_eq!(parse_word(b"18446744073709551615"), Some(Snapshot::from_bits(u64::MAX)));
        for bad in [&b""[..], b"+1", b" 1", b"1 ", b"-1", b"18446744073709551616", b"123456789012345678901", b"\xff"] {
            assert_eq!(parse_word(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn descriptions_are_bounded_and_lossy() {
        assert_eq!(describe(&[b'x'; 1000]).len(), 64);
        assert_eq!(describe(b"\xffok"), "\u{fffd}ok");
    }
}
