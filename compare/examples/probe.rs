//! Probe: one system, one workload shape, in a process of its own, so that
//! strace / perf can look at it alone. Not part of the comparison.
//! Usage: probe durq|okaywal THREADS PER_THREAD [DIR]
//!        probe w2alt ROUNDS PER_ROUND [DIR]
//!        probe w1durq|w1bare 1 MESSAGES [DIR]
use std::fs::File;
use std::sync::Barrier;
use std::time::Instant;

fn run<S: Send>(threads: usize, each: u64, mut setup: impl FnMut() -> S, send: impl Fn(&mut S, u64) + Sync) {
    let barrier = Barrier::new(threads + 1);
    let hs: Vec<S> = (0..threads).map(|_| setup()).collect();
    std::thread::scope(|s| {
        let joins: Vec<_> = hs
            .into_iter()
            .enumerate()
            .map(|(t, mut h)| {
                let (barrier, send) = (&barrier, &send);
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..each {
                        send(&mut h, (t as u64) << 32 | i);
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for j in joins {
            j.join().unwrap();
        }
        let el = start.elapsed();
        let n = threads as u64 * each;
        println!("{n} msgs in {:.3} s = {:.0}/s", el.as_secs_f64(), n as f64 / el.as_secs_f64());
    });
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let threads: usize = a[2].parse().unwrap();
    let each: u64 = a[3].parse().unwrap();
    let tmp = tempfile::tempdir_in(a.get(4).map_or("/tmp", String::as_str)).unwrap();
    let dir = tmp.path();
    let buf = vec![0x5au8; 100];
    match a[1].as_str() {
        "durq" => {
            let q = durq::Queue::open_with(dir.join("q"), durq::Options::default().durability(durq::Durability::Sync))
                .unwrap();
            let p = q.producer();
            run(
                threads,
                each,
                || (p.clone(), buf.clone()),
                |(p, b), i| {
                    b[..8].copy_from_slice(&i.to_le_bytes());
                    p.send(&*b).unwrap();
                },
            );
            let st = q.stats();
            println!("syncs {} records/sync {:.1}", st.syncs, st.messages_synced as f64 / st.syncs as f64);
        }
        "okaywal" => {
            let wal = open_okaywal(&dir.join("wal"));
            run(
                threads,
                each,
                || buf.clone(),
                |b, i| {
                    b[..8].copy_from_slice(&i.to_le_bytes());
                    let mut e = wal.begin_entry().unwrap();
                    e.write_chunk(b).unwrap();
                    e.commit().unwrap();
                },
            );
        }
        // One sender, durq's send and okaywal's commit alternating in
        // rounds of PER_THREAD, each side first every other round, so both
        // see the disk in the same state: per round, okaywal's time over
        // durq's (above 1: durq faster).
        "w2alt" => {
            let q = durq::Queue::open_with(dir.join("q"), durq::Options::default().durability(durq::Durability::Sync))
                .unwrap();
            let p = q.producer();
            let wal = open_okaywal(&dir.join("wal"));
            let mut b = buf.clone();
            let mut n = 0u64;
            let mut durq_round = || {
                let t = Instant::now();
                for _ in 0..each {
                    n += 1;
                    b[..8].copy_from_slice(&n.to_le_bytes());
                    p.send(&b).unwrap();
                }
                t.elapsed().as_secs_f64()
            };
            let mut b2 = buf.clone();
            let mut okay_round = || {
                let t = Instant::now();
                for i in 0..each {
                    b2[..8].copy_from_slice(&i.to_le_bytes());
                    let mut e = wal.begin_entry().unwrap();
                    e.write_chunk(&b2).unwrap();
                    e.commit().unwrap();
                }
                t.elapsed().as_secs_f64()
            };
            let (mut ratios, mut td, mut to) = (Vec::new(), 0.0, 0.0);
            for r in 0..threads {
                let (d, o) = if r % 2 == 0 {
                    let d = durq_round();
                    (d, okay_round())
                } else {
                    let o = okay_round();
                    (durq_round(), o)
                };
                td += d;
                to += o;
                ratios.push(o / d);
            }
            ratios.sort_by(f64::total_cmp);
            println!(
                "rounds {threads} x {each}: durq {:.1} us/send, okaywal {:.1} us/send, okaywal/durq overall {:.3}, per-round median {:.3} (p25 {:.3}, p75 {:.3})",
                td * 1e6 / (threads as f64 * each as f64),
                to * 1e6 / (threads as f64 * each as f64),
                to / td,
                ratios[ratios.len() / 2],
                ratios[ratios.len() / 4],
                ratios[ratios.len() * 3 / 4]
            );
        }
        // W1's two cells: durq under `Buffered` with one flush at the end,
        // and the bare mapping (compare/src/reference.rs, `mmap_msync`):
        // the send loop and the final sync timed apart, with this
        // process's page faults and CPU migrations.
        "w1durq" | "w1bare" => {
            let n = threads as u64 * each;
            let usage = || {
                // SAFETY: all-zero is a valid rusage; getrusage only writes it.
                let mut u: libc::rusage = unsafe { std::mem::zeroed() };
                // SAFETY: `u` is valid and writable for the call.
                unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
                (u.ru_minflt, u.ru_majflt, u.ru_nvcsw + u.ru_nivcsw)
            };
            let mut b = buf.clone();
            let (u0, t0, t1, t2);
            if a[1] == "w1durq" {
                let q = durq::Queue::open_with(
                    dir.join("q"),
                    durq::Options::default().durability(durq::Durability::Buffered),
                )
                .unwrap();
                let p = q.producer();
                u0 = usage();
                t0 = Instant::now();
                for i in 0..n {
                    b[..8].copy_from_slice(&i.to_le_bytes());
                    p.send(&b).unwrap();
                }
                t1 = Instant::now();
                p.flush().unwrap();
                t2 = Instant::now();
            } else {
                use std::os::fd::AsRawFd;
                let frame = 136;
                let bytes = n as usize * frame;
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(dir.join("mapped"))
                    .unwrap();
                // SAFETY: `f` is open and writable.
                assert_eq!(unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, bytes as libc::off_t) }, 0);
                File::open(dir).unwrap().sync_all().unwrap();
                // SAFETY: a file of this probe's own temporary directory.
                let mut map = unsafe { memmap2::MmapOptions::new().populate().map_mut(&f).unwrap() };
                u0 = usage();
                t0 = Instant::now();
                for i in 0..n {
                    b[..8].copy_from_slice(&i.to_le_bytes());
                    let at = i as usize * frame;
                    map[at..at + 4].copy_from_slice(&100u32.to_le_bytes());
                    map[at + 32..at + 132].copy_from_slice(&b);
                }
                t1 = Instant::now();
                map.flush().unwrap();
                t2 = Instant::now();
            }
            let u1 = usage();
            println!(
                "{}: {:.2} M/s; loop {:.1} ms, sync {:.1} ms; minor faults {}, major {}, context switches {}",
                a[1],
                n as f64 / (t2 - t0).as_secs_f64() / 1e6,
                (t1 - t0).as_secs_f64() * 1e3,
                (t2 - t1).as_secs_f64() * 1e3,
                u1.0 - u0.0,
                u1.1 - u0.1,
                u1.2 - u0.2
            );
        }
        other => panic!("unknown system {other}"),
    }
}

/// okaywal as compare/'s cells open it: 64 MiB preallocated, never
/// checkpointed, its preallocated files synced before any clock starts.
fn open_okaywal(path: &std::path::Path) -> okaywal::WriteAheadLog {
    let wal = okaywal::Configuration::default_for(path)
        .preallocate_bytes(64 << 20)
        .checkpoint_after_bytes(u64::MAX)
        .open(okaywal::LogVoid)
        .unwrap();
    for e in std::fs::read_dir(path).unwrap() {
        File::open(e.unwrap().path()).unwrap().sync_data().unwrap();
    }
    File::open(path).unwrap().sync_all().unwrap();
    wal
}
