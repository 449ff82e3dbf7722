//! Redis Streams, a server started by this program for every measurement on
//! 127.0.0.1 and a free port, with its data in the measurement's temporary
//! directory, `appendonly yes`, `appendfsync always`, no RDB snapshots; it is
//! shut down (`SHUTDOWN NOSAVE`, then killed if it lingers) afterwards. The
//! client speaks RESP by hand over a `TcpStream`.
//!
//! Under `appendfsync always` Redis fsyncs its AOF once per event-loop pass,
//! before it answers the commands read in that pass; a client cannot ask for
//! a sync at a later point. So W1/W5 are pipelined (1,000 XADDs per round
//! trip) and pay one fsync per pass; W3 sends each batch as one
//! `MULTI … EXEC`; W4 is `XREADGROUP COUNT 1000` then `XACK` of those ids.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Deadline, Kind, Outcome, Result, System, Workload, concurrent, payload, per_thread, stamp};

/// The `redis-server` binary on `PATH`, if any.
pub fn find_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("redis-server")).find(|p| p.is_file())
}

pub struct Redis {
    pub bin: PathBuf,
}

/// A reply.
#[derive(Debug)]
enum Value {
    Simple,
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

struct Conn {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
}

impl Conn {
    fn connect(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        s.set_nodelay(true)?;
        Ok(Conn { r: BufReader::with_capacity(1 << 16, s.try_clone()?), w: BufWriter::with_capacity(1 << 16, s) })
    }

    /// Queues one command; `flush` sends everything queued.
    fn push(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        write!(self.w, "*{}\r\n", args.len())?;
        for a in args {
            write!(self.w, "${}\r\n", a.len())?;
            self.w.write_all(a)?;
            self.w.write_all(b"\r\n")?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }

    fn line(&mut self) -> Result<Vec<u8>> {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line)?;
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            return Err(format!("redis: truncated reply {:?}", String::from_utf8_lossy(&line)).into());
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read(&mut self) -> Result<Value> {
        let line = self.line()?;
        let rest = std::str::from_utf8(&line[1..])?;
        match line[0] {
            b'+' => Ok(Value::Simple),
            b'-' => Err(format!("redis: {rest}").into()),
            b':' => Ok(Value::Int(rest.parse()?)),
            b'$' => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    return Ok(Value::Bulk(None));
                }
                let mut data = vec![0u8; n as usize + 2];
                std::io::Read::read_exact(&mut self.r, &mut data)?;
                data.truncate(n as usize);
                Ok(Value::Bulk(Some(data)))
            }
            b'*' => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    return Ok(Value::Array(None));
                }
                (0..n).map(|_| self.read()).collect::<Result<Vec<_>>>().map(|v| Value::Array(Some(v)))
            }
            other => Err(format!("redis: unexpected reply type {:?}", other as char).into()),
        }
    }

    fn call(&mut self, args: &[&[u8]]) -> Result<Value> {
        self.push(args)?;
        self.flush()?;
        self.read()
    }
}

/// A `redis-server` child process of this program.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(bin: &Path, dir: &Path) -> Result<Server> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let data = dir.join("redis");
        std::fs::create_dir_all(&data)?;
        let port_s = port.to_string();
        let args: &[&std::ffi::OsStr] = &[
            "--port".as_ref(),
            port_s.as_ref(),
            "--bind".as_ref(),
            "127.0.0.1".as_ref(),
            "--dir".as_ref(),
            data.as_os_str(),
            "--appendonly".as_ref(),
            "yes".as_ref(),
            "--appendfsync".as_ref(),
            "always".as_ref(),
            "--save".as_ref(),
            "".as_ref(),
            "--daemonize".as_ref(),
            "no".as_ref(),
            "--logfile".as_ref(),
            "redis.log".as_ref(),
        ];
        let child =
            Command::new(bin).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let mut server = Server { child, port };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = Conn::connect(port)
                && c.call(&[b"PING"]).is_ok()
            {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                return Err(format!("redis-server exited at start: {status}; see {}", data.display()).into());
            }
            if Instant::now() > until {
                return Err("redis-server did not answer PING within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn conn(&self) -> Result<Conn> {
        Ok(Conn::connect(self.port)?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(mut c) = Conn::connect(self.port) {
            // The server closes the connection instead of answering.
            let _ = c.call(&[b"SHUTDOWN", b"NOSAVE"]);
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const KEY: &[u8] = b"s";

fn xadd(c: &mut Conn, payload: &[u8]) -> std::io::Result<()> {
    c.push(&[b"XADD", KEY, b"*", b"d", payload])
}

/// Sends `messages` XADDs, `window` per round trip; returns how many went.
fn pipelined(c: &mut Conn, buf: &mut [u8], messages: u64, window: u64, deadline: Option<&Deadline>) -> Result<u64> {
    let mut n = 0;
    while n < messages && !deadline.is_some_and(Deadline::passed) {
        let k = (messages - n).min(window);
        for i in 0..k {
            stamp(buf, n + i);
            xadd(c, buf)?;
        }
        c.flush()?;
        for _ in 0..k {
            c.read()?;
        }
        n += k;
    }
    Ok(n)
}

impl System for Redis {
    fn name(&self) -> String {
        "Redis Streams".into()
    }

    fn run(&self, w: &Workload, dir: &Path) -> Result<Outcome> {
        let server = Server::start(&self.bin, dir)?;
        let mut buf = payload(w.payload);
        match w.kind {
            Kind::SyncAtEnd => {
                let mut c = server.conn()?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let n = pipelined(&mut c, &mut buf, w.messages, 1000, Some(&deadline))?;
                Ok(Outcome::done(n, start)
                    .with_note("XADD pipelined 1,000 per round trip; `always` fsyncs once per event-loop pass"))
            }
            Kind::EachDurable => {
                let mut c = server.conn()?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let n = pipelined(&mut c, &mut buf, w.messages, 1, Some(&deadline))?;
                Ok(Outcome::done(n, start).with_note("one XADD per round trip"))
            }
            Kind::Batches(size) => {
                let mut c = server.conn()?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    c.push(&[b"MULTI"])?;
                    for i in 0..size as u64 {
                        stamp(&mut buf, n + i);
                        xadd(&mut c, &buf)?;
                    }
                    c.push(&[b"EXEC"])?;
                    c.flush()?;
                    for _ in 0..size + 1 {
                        c.read()?;
                    }
                    match c.read()? {
                        Value::Array(Some(v)) if v.len() == size => {}
                        other => return Err(format!("redis: EXEC answered {other:?}").into()),
                    }
                    n += size as u64;
                }
                Ok(Outcome::done(n, start).with_note("MULTI, 100 XADD, EXEC per round trip"))
            }
            Kind::Consume { batch } => {
                let mut c = server.conn()?;
                // The preload is not timed and need not be durable one by one.
                c.call(&[b"CONFIG", b"SET", b"appendfsync", b"no"])?;
                pipelined(&mut c, &mut buf, w.messages, 1000, None)?;
                c.call(&[b"CONFIG", b"SET", b"appendfsync", b"always"])?;
                c.call(&[b"XGROUP", b"CREATE", KEY, b"g", b"0"])?;
                let count = batch.to_string();
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let (mut seen, mut bytes) = (0u64, 0usize);
                while seen < w.messages && !deadline.passed() {
                    let reply = c.call(&[
                        b"XREADGROUP",
                        b"GROUP",
                        b"g",
                        b"c",
                        b"COUNT",
                        count.as_bytes(),
                        b"STREAMS",
                        KEY,
                        b">",
                    ])?;
                    let mut ids = Vec::with_capacity(batch);
                    for_each_entry(reply, |id, data| {
                        ids.push(id);
                        bytes += data.len();
                    })?;
                    if ids.is_empty() {
                        return Err("redis: XREADGROUP returned nothing before the end".into());
                    }
                    let mut args: Vec<&[u8]> = vec![b"XACK", KEY, b"g"];
                    args.extend(ids.iter().map(Vec::as_slice));
                    match c.call(&args)? {
                        Value::Int(k) if k as usize == ids.len() => {}
                        other => return Err(format!("redis: XACK answered {other:?}").into()),
                    }
                    seen += ids.len() as u64;
                }
                let out = Outcome::done(seen, start);
                assert_eq!(bytes as u64, seen * w.payload as u64, "Redis consumed the wrong bytes");
                Ok(out.with_note(&format!("XREADGROUP COUNT {batch}, then one XACK of those ids")))
            }
            Kind::Concurrent { threads } => {
                let out = concurrent(
                    threads,
                    per_thread(w.messages, threads),
                    w.cap,
                    |_| Ok((server.conn()?, buf.clone())),
                    |(c, buf), t, i| {
                        stamp(buf, (t as u64) << 32 | i);
                        xadd(c, buf)?;
                        c.flush()?;
                        c.read()?;
                        Ok(())
                    },
                )?;
                Ok(out.with_note("a connection per thread, one XADD per round trip"))
            }
        }
    }
}

/// Calls `f(id, payload)` for every entry of an XREADGROUP reply.
fn for_each_entry(reply: Value, mut f: impl FnMut(Vec<u8>, Vec<u8>)) -> Result<()> {
    let Value::Array(Some(streams)) = reply else { return Ok(()) };
    for stream in streams {
        let Value::Array(Some(mut pair)) = stream else { return Err("redis: odd XREADGROUP reply".into()) };
        let Some(Value::Array(Some(entries))) = pair.pop() else { return Err("redis: odd XREADGROUP reply".into()) };
        for entry in entries {
            let Value::Array(Some(mut e)) = entry else { return Err("redis: odd stream entry".into()) };
            let (Some(Value::Array(Some(mut fields))), Some(Value::Bulk(Some(id)))) = (e.pop(), e.pop()) else {
                return Err("redis: odd stream entry".into());
            };
            let Some(Value::Bulk(Some(data))) = fields.pop() else { return Err("redis: entry without payload".into()) };
            f(id, data);
        }
    }
    Ok(())
}
