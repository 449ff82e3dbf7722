//! `durq stat` on groups, `durq group reset|delete` and `durq dlq`, run as
//! real processes.

use std::ops::Index;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{durq, fails, ok, queue_dir};

/// Creates the queue at `q` with 64 KiB segments (opening a default 64 MiB
/// one is slow in a debug build) and sends `input`'s lines.
fn produce_new(q: &str, input: &str) {
    ok(&["produce", q, "--segment-bytes", "65536", "--record-bytes-max", "16384"], input);
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `durq stat --json`, parsed.
fn stat(q: &str) -> Json {
    Json::parse(&ok(&["stat", q, "--json"], ""))
}

/// The group called `name` in a parsed `stat --json`.
fn group<'a>(stat: &'a Json, name: &str) -> Option<&'a Json> {
    stat["groups"].array().iter().find(|g| g["name"].str() == name)
}

/// Polls `stat --json` until `done` holds for it (10 s at most).
fn stat_until(q: &str, what: &str, done: impl Fn(&Json) -> bool) -> Json {
    let start = Instant::now();
    loop {
        let s = stat(q);
        if done(&s) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never {what}: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_consumer(q: &str, group: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_durq"))
        .args(["consume", q, "--group", group, "--idle-exit", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn stat_shows_members_and_slot_holders_while_a_consumer_lives_and_after_it_is_killed() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, "m0\nm1\nm2\nm3\nm4\n");
    assert_eq!(ok(&["consume", &q, "--group", "g", "--limit", "2"], ""), "m0\nm1\n");

    // The consumer left: no members, its slot released at the epoch it took.
    let s = stat(&q);
    assert_eq!(s["partitions"][0]["next_offset"].u64(), 5, "{s:?}");
    let g = group(&s, "g").unwrap();
    assert_eq!(g["committed"], Json::numbers(&[2]));
    assert_eq!(g["lag"], Json::numbers(&[3]));
    assert_eq!(g["members"], Json::Arr(vec![]));
    assert_eq!(g["dead_letters"].u64(), 0);
    let slot = &g["slots"][0];
    assert_eq!(slot["slot"].u64(), 0);
    let first_epoch = slot["epoch"].u64();
    assert!(first_epoch >= 1, "{slot:?}");
    assert_eq!(slot["holder"].str(), "released");
    assert_eq!(slot["lease"]["member"], Json::Null);
    assert_eq!(slot["lease_error"], Json::Null);

    // A running consumer: one live member holding the slot, at a new epoch.
    let mut child = spawn_consumer(&q, "g");
    let pid = u64::from(child.id());
    let s = stat_until(&q, "joined and caught up", |s| {
        group(s, "g").is_some_and(|g| {
            g["members"].array().iter().any(|m| m["liveness"].str() == "alive") && g["lag"] == Json::numbers(&[0])
        })
    });
    let g = group(&s, "g").unwrap();
    let members = g["members"].array();
    assert_eq!(members.len(), 1, "{g:?}");
    let member = &members[0];
    assert_eq!(member["pid"].u64(), pid);
    let id = member["id"].str().to_owned();
    assert_eq!(id.len(), 32);
    assert!(member["heartbeat_ms"].u64().abs_diff(now_ms()) < 60_000, "{member:?}");
    assert_eq!(g["committed"], Json::numbers(&[5]));
    let slot = &g["slots"][0];
    assert_eq!(slot["holder"].str(), "alive", "{slot:?}");
    assert!(slot["epoch"].u64() > first_epoch, "{slot:?}");
    assert_eq!(slot["lease"]["member"].str(), id);
    assert_eq!(slot["lease"]["pid"].u64(), pid);
    assert_eq!(slot["lease"]["epoch"].u64(), slot["epoch"].u64());

    // The same as tables: a heading, the slot row, the member row.
    let table = ok(&["stat", &q], "");
    let lines: Vec<&str> = table.lines().collect();
    let heading = lines.iter().position(|l| *l == "group g: 1 member(s), 0 dead letter(s)").expect(&table);
    assert!(lines[heading + 1].starts_with("PARTITION  COMMITTED  LAG  EPOCH  HOLDER"), "{table}");
    let row: Vec<&str> = lines[heading + 2].split_whitespace().collect();
    let (epoch, pid_text) = (slot["epoch"].u64().to_string(), pid.to_string());
    assert_eq!(row[..6], ["0", "5", "0", &epoch, &id, &pid_text], "{table}");
    assert!(row[6].ends_with("ms") && row[7] == "ago" && row[8] == "alive", "{table}");
    assert!(lines[heading + 3].starts_with("MEMBER "), "{table}");
    let row: Vec<&str> = lines[heading + 4].split_whitespace().collect();
    assert_eq!([row[0], row[1], row[3], row[4]], [&id, &pid_text, "ago", "alive"], "{table}");

    // Reset and delete are refused while the member lives.
    let err = fails(&["group", "reset", &q, "--group", "g", "--to", "earliest"], "", 1);
    assert!(err.contains("busy"), "{err}");
    let err = fails(&["group", "delete", &q, "--group", "g"], "", 1);
    assert!(err.contains("busy"), "{err}");

    // Killed: its member is dead (or gone), and the slot is not held by a
    // live member.
    child.kill().unwrap();
    child.wait().unwrap();
    let s = stat(&q);
    let g = group(&s, "g").unwrap();
    assert!(g["members"].array().iter().all(|m| m["liveness"].str() == "dead"), "{g:?}");
    assert_eq!(g["slots"][0]["holder"].str(), "dead", "{g:?}");
    assert_eq!(g["committed"], Json::numbers(&[5]));

    // Now the group can be moved and deleted.
    assert_eq!(ok(&["group", "reset", &q, "--group", "g", "--to", "earliest"], ""), "0 0\n");
    let s = stat(&q);
    let g = group(&s, "g").unwrap();
    assert_eq!(g["members"], Json::Arr(vec![]), "reset reaped the dead member");
    assert_eq!((g["committed"].clone(), g["lag"].clone()), (Json::numbers(&[0]), Json::numbers(&[5])));
    assert_eq!(g["slots"][0]["holder"].str(), "released");
    assert_eq!(
        ok(&["group", "delete", &q, "--group", "g"], ""),
        "deleted group \"g\": its positions, leases and dead letters\n"
    );
    assert!(group(&stat(&q), "g").is_none());
    assert!(ok(&["stat", &q], "").ends_with("\nno consumer groups\n"));
    let err = fails(&["group", "delete", &q, "--group", "g"], "", 1);
    assert!(err.contains("no group \"g\""), "{err}");
}

#[test]
fn group_reset_moves_where_the_next_consume_starts() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, "m0\nm1\nm2\n");
    std::thread::sleep(Duration::from_millis(30));
    let between = format!("@{}", now_ms());
    std::thread::sleep(Duration::from_millis(30));
    ok(&["produce", &q], "m3\nm4\n");
    let all = "m0\nm1\nm2\nm3\nm4\n";
    let consume = |limit: &str| ok(&["consume", &q, "--group", "g", "--limit", limit, "--idle-exit", "0.2"], "");
    let reset = |to: &str| ok(&["group", "reset", &q, "--group", "g", "--to", to], "");

    assert_eq!(consume("100"), all);
    assert_eq!(reset("earliest"), "0 0\n");
    assert_eq!(consume("100"), all, "everything again");
    assert_eq!(reset("latest"), "0 5\n");
    assert_eq!(consume("100"), "", "nothing left");
    assert_eq!(reset("2"), "0 2\n");
    assert_eq!(consume("3"), "m2\nm3\nm4\n");
    assert_eq!(reset("2000-01-01T00:00:00Z"), "0 0\n", "a time before the first record is earliest");
    assert_eq!(consume("5"), all);
    assert_eq!(reset(&between), "0 3\n", "the first record at or after {between}");
    assert_eq!(consume("2"), "m3\nm4\n");
    assert_eq!(reset("2999-12-31T23:59:59.999+08:00"), "0 5\n", "a time after the last record is the end");
    assert_eq!(reset("99"), "0 5\n", "an offset is clamped to the log");

    let err = fails(&["group", "reset", &q, "--group", "nope", "--to", "earliest"], "", 1);
    assert!(err.contains("no group \"nope\""), "{err}");
    let err = fails(&["group", "reset", &q, "--group", "g", "--to", "yesterday"], "", 2);
    assert!(err.contains("yesterday"), "{err}");
    let err = fails(&["group", "reset", &q, "--group", "g", "--to", "2026-02-30T00:00:00Z"], "", 2);
    assert!(err.contains("RFC 3339"), "{err}");
    fails(&["group", "reset", &q, "--group", "g"], "", 2);
}

#[test]
fn dead_letters_are_listed_one_per_line_and_replayed_to_the_end_of_the_log() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, "ok 0\n");
    {
        // A poison record (with a newline and a byte that is not UTF-8),
        // failed once with max_deliveries 1: straight to the DLQ.
        let queue = durq::Queue::open_existing(&q).unwrap();
        queue.producer().send_keyed("k", b"poison\n\xff").unwrap();
        queue.producer().send("ok 2").unwrap();
        let options =
            durq::ConsumerOptions::default().max_deliveries(1).max_batch(1).retry_backoff(vec![Duration::ZERO]);
        let mut consumer = queue.consumer_with("g", options).unwrap();
        let mut failures = 0;
        loop {
            let r = consumer.process_timeout(Duration::from_millis(20), |batch| {
                if batch[0].payload().starts_with(b"poison") {
                    return Err(std::io::Error::other("cannot parse: \"x\""));
                }
                Ok(())
            });
            match r {
                Ok(0) => break,
                Ok(_) => {}
                Err(durq::Error::Process(_)) => failures += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(failures, 1);
    }

    let s = stat(&q);
    assert_eq!(group(&s, "g").unwrap()["dead_letters"].u64(), 1, "{s:?}");
    assert_eq!(group(&s, "g").unwrap()["lag"], Json::numbers(&[0]));
    assert!(ok(&["stat", &q], "").contains("group g: 0 member(s), 1 dead letter(s)\n"));

    let list = ok(&["dlq", &q, "--group", "g", "list"], "");
    assert_eq!(
        list,
        "dlq_offset=0 partition=0 offset=1 deliveries=1 error=\"cannot parse: \\\"x\\\"\" key=\"k\" payload=\"poison\\n\u{fffd}\"\n"
    );
    assert_eq!(ok(&["dlq", &q, "--group", "g", "list", "--limit", "0"], ""), "");
    assert_eq!(ok(&["dlq", &q, "--group", "g", "replay"], ""), "1\n");
    assert_eq!(ok(&["dlq", &q, "--group", "g", "list"], ""), "");
    assert_eq!(group(&stat(&q), "g").unwrap()["dead_letters"].u64(), 0);
    assert_eq!(ok(&["dlq", &q, "--group", "g", "replay"], ""), "0\n");

    // The replayed record is at the end of the log, key and all.
    let run = durq(&["consume", &q, "--group", "other", "--limit", "4"], "");
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout, b"ok 0\npoison\n\xff\nok 2\npoison\n\xff\n");
    let queue = durq::Queue::open_existing(&q).unwrap();
    let replayed = queue.read_at(0, 3, 10).unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!((replayed[0].key.as_deref(), &replayed[0].payload[..]), (Some(&b"k"[..]), &b"poison\n\xff"[..]));
    drop(queue);

    // A group without dead letters lists nothing; an unknown group is an error.
    assert_eq!(ok(&["dlq", &q, "--group", "other", "list"], ""), "");
    let err = fails(&["dlq", &q, "--group", "nope", "list"], "", 1);
    assert!(err.contains("no group \"nope\""), "{err}");
}

#[test]
fn group_commands_never_create_a_queue_and_bad_arguments_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("typo");
    let missing = missing.to_str().unwrap();
    for args in [
        &["group", "reset", missing, "--group", "g", "--to", "earliest"][..],
        &["group", "delete", missing, "--group", "g"],
        &["dlq", missing, "--group", "g", "list"],
        &["dlq", missing, "--group", "g", "replay"],
    ] {
        let err = fails(args, "", 1);
        assert!(err.contains("not a durq queue"), "{err}");
    }
    assert!(!Path::new(missing).exists());

    let (_tmp, q) = queue_dir();
    produce_new(&q, "");
    fails(&["group", "reset", &q, "--to", "earliest"], "", 2);
    fails(&["group", "frobnicate", &q, "--group", "g"], "", 2);
    fails(&["dlq", &q, "--group", "g"], "", 2);
    fails(&["dlq", &q, "list"], "", 2);
    fails(&["dlq", &q, "--group", "g", "list", "--limit", "some"], "", 2);
    let err = fails(&["group", "delete", &q, "--group", "a/b"], "", 1);
    assert!(err.contains("invalid group name"), "{err}");
}

/// Just enough JSON to check `stat --json`: numbers are kept as text, so
/// 64-bit values compare exactly.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let mut p = JsonParser { b: text.as_bytes(), at: 0 };
        let value = p.value();
        p.ws();
        assert_eq!(p.at, p.b.len(), "trailing bytes after JSON in {text:?}");
        value
    }

    fn numbers(ns: &[u64]) -> Json {
        Json::Arr(ns.iter().map(|n| Json::Num(n.to_string())).collect())
    }

    fn u64(&self) -> u64 {
        match self {
            Json::Num(n) => n.parse().unwrap_or_else(|_| panic!("{n} is not a u64")),
            other => panic!("not a number: {other:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn array(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            other => panic!("not an array: {other:?}"),
        }
    }
}

impl Index<&str> for Json {
    type Output = Json;
    fn index(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no {key:?} in {self:?}")),
            other => panic!("not an object: {other:?}"),
        }
    }
}

impl Index<usize> for Json {
    type Output = Json;
    fn index(&self, i: usize) -> &Json {
        &self.array()[i]
    }
}

struct JsonParser<'a> {
    b: &'a [u8],
    at: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.b.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let found = self.b.get(self.at) == Some(&c);
        self.at += usize::from(found);
        found
    }

    fn expect(&mut self, c: u8) {
        assert!(self.eat(c), "expected {:?} at byte {}", c as char, self.at);
    }

    fn literal(&mut self, word: &str, value: Json) -> Json {
        assert!(self.b[self.at..].starts_with(word.as_bytes()), "bad literal at byte {}", self.at);
        self.at += word.len();
        value
    }

    fn value(&mut self) -> Json {
        self.ws();
        match self.b.get(self.at).copied() {
            Some(b'{') => {
                self.at += 1;
                let mut fields = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.ws();
                        let key = self.string();
                        self.expect(b':');
                        fields.push((key, self.value()));
                        if self.eat(b'}') {
                            break;
                        }
                        self.expect(b',');
                    }
                }
                Json::Obj(fields)
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value());
                        if self.eat(b']') {
                            break;
                        }
                        self.expect(b',');
                    }
                }
                Json::Arr(items)
            }
            Some(b'"') => Json::Str(self.string()),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                self.at += 1;
                while self.b.get(self.at).is_some_and(|c| c.is_ascii_digit() || b".eE+-".contains(c)) {
                    self.at += 1;
                }
                Json::Num(String::from_utf8(self.b[start..self.at].to_vec()).unwrap())
            }
            other => panic!("unexpected {:?} at byte {}", other.map(char::from), self.at),
        }
    }

    fn string(&mut self) -> String {
        assert_eq!(self.b.get(self.at), Some(&b'"'), "expected a string at byte {}", self.at);
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let c = *self.b.get(self.at).expect("unterminated string");
            self.at += 1;
            match c {
                b'"' => return String::from_utf8(out).expect("UTF-8 string"),
                b'\\' => {
                    let e = self.b[self.at];
                    self.at += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = std::str::from_utf8(&self.b[self.at..self.at + 4]).unwrap();
                            self.at += 4;
                            char::from_u32(u32::from_str_radix(hex, 16).unwrap()).expect("no surrogates here")
                        }
                        _ => panic!("bad escape \\{}", e as char),
                    };
                    out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                }
                c if c < 0x20 => panic!("raw control byte {c:#x} in a string"),
                c => out.push(c),
            }
        }
    }
}

#[test]
fn dead_letters_are_listed_a_page_at_a_time() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, "");
    {
        let queue = durq::Queue::open_existing(&q).unwrap();
        for i in 0..5 {
            queue.producer().send(format!("poison {i}")).unwrap();
        }
        let options =
            durq::ConsumerOptions::default().max_deliveries(1).max_batch(1).retry_backoff(vec![Duration::ZERO]);
        let mut consumer = queue.consumer_with("g", options).unwrap();
        while !matches!(
            consumer.process_timeout(Duration::from_millis(20), |_| Err::<(), _>(std::io::Error::other("no"))),
            Ok(0)
        ) {}
    }
    let offsets = |args: &[&str]| -> Vec<u64> {
        let mut all = vec!["dlq", &q, "--group", "g", "list"];
        all.extend_from_slice(args);
        ok(&all, "")
            .lines()
            .map(|l| l.strip_prefix("dlq_offset=").unwrap().split(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(offsets(&[]), [0, 1, 2, 3, 4]);
    assert_eq!(offsets(&["--limit", "2"]), [0, 1]);
    assert_eq!(offsets(&["--from", "2", "--limit", "2"]), [2, 3]);
    assert_eq!(offsets(&["--from", "4", "--limit", "2"]), [4]);
    assert_eq!(offsets(&["--from", "3"]), [3, 4]);
    assert_eq!(offsets(&["--from", "9"]), Vec::<u64>::new());
    fails(&["dlq", &q, "--group", "g", "list", "--from", "-1"], "", 2);
}
