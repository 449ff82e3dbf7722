//! A loopback TCP proxy between a client and a server that reads the NATS
//! protocol frame by frame and can stall one direction of a connection from
//! its first key-value write on: from the first publish into a `$KV.`
//! subject ([`Hold::KvWrites`]), every frame of that direction is held
//! back, in order, until [`Proxy::release`] sends them on. Frames before it (the
//! records a member reads, its earlier writes) pass at once: what a stalled
//! connection looks like to a member at the instant it marks a batch, made
//! exact. It can also lose one frame: the first acknowledgement of an
//! atomic batch's commit ([`Hold::LoseBatchAck`]), as a lost reply is.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

/// Which frames the proxy holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Nothing: every frame passes.
    Nothing,
    /// `PUB`/`HPUB` frames from the client into a `$KV.` subject.
    KvWrites,
    /// The first `MSG`/`HMSG` frame from the server that acknowledges an
    /// atomic batch (names a `"batch"`): dropped, not held; then nothing.
    LoseBatchAck,
}

/// The proxy: listens on a free loopback port, one upstream connection per
/// client connection. Its threads end with their connections.
pub struct Proxy {
    port: u16,
    state: Arc<Mutex<State>>,
}

struct State {
    hold: Hold,
    /// Held frames, each with the connection it goes to.
    held: Vec<(TcpStream, Vec<u8>)>,
    /// How many frames were dropped ([`Hold::LoseBatchAck`]).
    dropped: usize,
}

impl Proxy {
    /// A proxy in front of the server at `upstream` (`nats://host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("nats://").to_owned();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State { hold: Hold::Nothing, held: Vec::new(), dropped: 0 }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(&upstream).expect("the proxy connects to the server");
                for (from, to, direction) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap(), Direction::ToServer),
                    (server, client, Direction::ToClient),
                ] {
                    let state = shared.clone();
                    std::thread::spawn(move || forward(from, to, direction, &state));
                }
            }
        });
        Proxy { port, state }
    }

    /// The address a client connects to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts holding back `hold`'s frames.
    pub fn hold(&self, hold: Hold) {
        self.state().hold = hold;
    }

    /// Stops holding and sends every held frame on, in order.
    pub fn release(&self) {
        let mut state = self.state();
        state.hold = Hold::Nothing;
        for (mut to, frame) in std::mem::take(&mut state.held) {
            // A connection that closed meanwhile takes nothing more.
            let _ = to.write_all(&frame);
        }
    }

    /// How many frames were dropped so far.
    pub fn dropped(&self) -> usize {
        self.state().dropped
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

/// Copies `from` to `to` frame by frame, holding back the frames the
/// proxy's [`Hold`] names and every frame to the same peer behind them. A
/// frame is written (or held) under the state's lock, so a release never
/// lets a later frame overtake a held one.
fn forward(from: TcpStream, to: TcpStream, direction: Direction, state: &Mutex<State>) {
    let mut from = BufReader::new(from);
    let mut to = to;
    while let Some(frame) = read_frame(&mut from) {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        let hold = match state.hold {
            Hold::Nothing => false,
            Hold::KvWrites => direction == Direction::ToServer && is_kv_write(&frame),
            Hold::LoseBatchAck => {
                if direction == Direction::ToClient && is_batch_ack(&frame) {
                    state.hold = Hold::Nothing;
                    state.dropped += 1;
                    continue;
                }
                false
            }
        };
        if hold || state.held.iter().any(|(held_to, _)| same_peer(held_to, &to)) {
            state.held.push((to.try_clone().unwrap(), frame));
        } else if to.write_all(&frame).is_err() {
            return;
        }
    }
}

fn same_peer(a: &TcpStream, b: &TcpStream) -> bool {
    a.peer_addr().ok() == b.peer_addr().ok() && a.local_addr().ok() == b.local_addr().ok()
}

/// One protocol frame: its control line, and for a message its payload
/// (whose length is the line's last field) and the `\r\n` after it. `None`
/// when the connection ends.
fn read_frame(from: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut frame = Vec::new();
    if from.read_until(b'\n', &mut frame).ok()? == 0 {
        return None;
    }
    let line = String::from_utf8_lossy(&frame).into_owned();
    let mut fields = line.split_whitespace();
    let op = fields.next().unwrap_or("").to_ascii_uppercase();
    if matches!(op.as_str(), "PUB" | "HPUB" | "MSG" | "HMSG") {
        let total: usize = line.split_whitespace().last()?.parse().ok()?;
        let start = frame.len();
        frame.resize(start + total + 2, 0);
        from.read_exact(&mut frame[start..]).ok()?;
    }
    Some(frame)
}

fn is_kv_write(frame: &[u8]) -> bool {
    frame.starts_with(b"PUB $KV.") || frame.starts_with(b"HPUB $KV.")
}

fn is_batch_ack(frame: &[u8]) -> bool {
    (frame.starts_with(b"MSG ") || frame.starts_with(b"HMSG "))
        && frame.windows(b"\"batch\":\"".len()).any(|w| w == b"\"batch\":\"")
}
