//! Probe: one system, one workload shape, in a process of its own, so that
//! strace / perf can look at it alone. Not part of the comparison.
//! Usage: probe durq|okaywal THREADS PER_THREAD [DIR]
//!        probe w2alt ROUNDS PER_ROUND [DIR]
//!        probe w1durq|w1bare 1 MESSAGES [DIR]
//!        probe w4alt|w4durq|w4bare|w7alt ROUNDS BATCHES_PER_ROUND [DIR]
//!        probe w4sfr|w4thread ROUNDS BATCHES_PER_ROUND [DIR]
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
        // W4's two cells in one process: durq's consumer (`max_batch(1000)`,
        // `commit(Sync)`) and the bare row (compare/src/reference.rs,
        // `read_commit`: `pread` of 1,000 frames, an 8-byte cursor `pwrite`
        // and `fdatasync`), alternating in rounds of BATCHES_PER_ROUND
        // batches, each side first every other round. The read and the
        // commit are timed apart (durq's `process`: until its closure is
        // called, and from then on). `w4durq` and
        // `w4bare` run one side alone, for `perf` counts per side.
        "w4alt" | "w4durq" | "w4bare" => w4(&a[1], threads, each as usize, 1000, dir),
        // The same with W7's shape: a batch (and a commit) per message.
        "w7alt" => w4(&a[1], threads, each as usize, 1, dir),
        // What overlapping the next batch's read with the commit's sync
        // could win, measured on the bare row alone: the bare batch against
        // the same batch with its next read done while the cursor's write is
        // in flight (`w4sfr`: `sync_file_range(WRITE)` starts it, the
        // `fdatasync` after the read waits for it and flushes) or while a
        // helper thread runs the `fdatasync` (`w4thread`), alternating.
        "w4sfr" | "w4thread" => w4_overlap(&a[1], threads, each as usize, dir),
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

/// Per-batch wall times of one W4 side: the read and the commit, in µs.
#[derive(Default)]
struct W4Times {
    read_us: Vec<f64>,
    commit_us: Vec<f64>,
}

impl W4Times {
    fn add(&mut self, read: std::time::Duration, commit: std::time::Duration) {
        self.read_us.push(read.as_secs_f64() * 1e6);
        self.commit_us.push(commit.as_secs_f64() * 1e6);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn w4(mode: &str, rounds: usize, per_round: usize, batch: usize, dir: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    const FRAME: usize = 132;
    let n = rounds * per_round * batch;
    let buf = vec![0x5au8; 100];
    let durq_side = mode != "w4bare";
    let bare_side = mode != "w4durq";
    let q =
        durq::Queue::open_with(dir.join("q"), durq::Options::default().durability(durq::Durability::Buffered)).unwrap();
    let mut consumer = None;
    if durq_side {
        let p = q.producer();
        let chunk = vec![buf.clone(); batch];
        for _ in 0..n / batch {
            p.send_batch(&chunk).unwrap();
        }
        p.flush().unwrap();
        let options = durq::ConsumerOptions::default().max_batch(batch).commit(durq::Durability::Sync);
        consumer = Some(q.consumer_with("bench", options).unwrap());
    }
    let (mut data, mut cursor) = (None, None);
    if bare_side {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("log"))
            .unwrap();
        let chunk = vec![7u8; batch * FRAME];
        for _ in 0..n / batch {
            std::io::Write::write_all(&mut f, &chunk).unwrap();
        }
        f.sync_all().unwrap();
        // As the reference makes it: 1 MiB of zeros, synced.
        let mut c = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("cursor"))
            .unwrap();
        std::io::Write::write_all(&mut c, &vec![0u8; 1 << 20]).unwrap();
        c.sync_all().unwrap();
        File::open(dir).unwrap().sync_all().unwrap();
        data = Some(f);
        cursor = Some(c);
    }
    let mut rbuf = vec![0u8; batch * FRAME];
    let (mut seen, mut bytes) = (0u64, 0usize);
    let mut durq_round = |times: &mut W4Times| {
        let c = consumer.as_mut().unwrap();
        for _ in 0..per_round {
            let t0 = Instant::now();
            let mut t1 = t0;
            c.process(|msgs| {
                t1 = Instant::now();
                bytes += msgs.iter().map(|m| m.payload().len()).sum::<usize>();
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
            times.add(t1 - t0, t1.elapsed());
        }
    };
    let mut bare_round = |times: &mut W4Times| {
        let (data, cursor) = (data.as_ref().unwrap(), cursor.as_ref().unwrap());
        for _ in 0..per_round {
            let t0 = Instant::now();
            data.read_exact_at(&mut rbuf, seen * FRAME as u64).unwrap();
            seen += batch as u64;
            let t1 = Instant::now();
            cursor.write_all_at(&seen.to_le_bytes(), 0).unwrap();
            cursor.sync_data().unwrap();
            times.add(t1 - t0, t1.elapsed());
        }
    };
    let (mut durq_all, mut bare_all) = (W4Times::default(), W4Times::default());
    let (mut batch_ratios, mut commit_ratios) = (Vec::new(), Vec::new());
    let start = Instant::now();
    for r in 0..rounds {
        let (mut d, mut b) = (W4Times::default(), W4Times::default());
        if r % 2 == 0 {
            if durq_side {
                durq_round(&mut d);
            }
            if bare_side {
                bare_round(&mut b);
            }
        } else {
            if bare_side {
                bare_round(&mut b);
            }
            if durq_side {
                durq_round(&mut d);
            }
        }
        if durq_side && bare_side {
            let total = |t: &W4Times| t.read_us.iter().sum::<f64>() + t.commit_us.iter().sum::<f64>();
            batch_ratios.push(total(&b) / total(&d));
            commit_ratios.push(median(&mut b.commit_us.clone()) / median(&mut d.commit_us.clone()));
        }
        durq_all.read_us.extend(d.read_us);
        durq_all.commit_us.extend(d.commit_us);
        bare_all.read_us.extend(b.read_us);
        bare_all.commit_us.extend(b.commit_us);
    }
    let el = start.elapsed().as_secs_f64();
    let show = |name: &str, t: &mut W4Times| {
        if t.read_us.is_empty() {
            return;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (rm, cm) = (mean(&t.read_us), mean(&t.commit_us));
        let read_median = median(&mut t.read_us);
        let c = &mut t.commit_us;
        c.sort_by(f64::total_cmp);
        let at = |q: usize| c[c.len() * q / 100];
        println!(
            "{name}: per batch read {rm:.1} us (median {read_median:.1}), commit {cm:.1} us (p10 {:.1}, p25 {:.1}, median {:.1}, p90 {:.1})",
            at(10),
            at(25),
            at(50),
            at(90)
        );
    };
    println!("{mode}: {rounds} rounds x {per_round} batches of {batch} in {el:.2} s");
    show("durq", &mut durq_all);
    show("bare", &mut bare_all);
    if !batch_ratios.is_empty() {
        println!(
            "per round, durq over bare (bare time / durq time): batch {:.3} (p25 {:.3}, p75 {:.3}); commit median {:.3} (p25 {:.3}, p75 {:.3})",
            median(&mut batch_ratios),
            batch_ratios[batch_ratios.len() / 4],
            batch_ratios[batch_ratios.len() * 3 / 4],
            median(&mut commit_ratios),
            commit_ratios[commit_ratios.len() / 4],
            commit_ratios[commit_ratios.len() * 3 / 4]
        );
    }
    if durq_side {
        assert_eq!(bytes, rounds * per_round * batch * buf.len(), "durq consumed the wrong bytes");
    }
}

fn w4_overlap(mode: &str, rounds: usize, per_round: usize, dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    const BATCH: usize = 1000;
    const FRAME: usize = 132;
    let batches = rounds * per_round;
    let open = |name: &str| {
        std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join(name)).unwrap()
    };
    // Each side reads its own half of one file.
    let mut data = open("log");
    let chunk = vec![7u8; BATCH * FRAME];
    for _ in 0..2 * batches + 1 {
        std::io::Write::write_all(&mut data, &chunk).unwrap();
    }
    data.sync_all().unwrap();
    let cursor = |name: &str| {
        let mut c = open(name);
        std::io::Write::write_all(&mut c, &vec![0u8; 1 << 20]).unwrap();
        c.sync_all().unwrap();
        c
    };
    let (plain_cursor, overlap_cursor) = (cursor("cursor"), std::sync::Arc::new(cursor("cursor2")));
    File::open(dir).unwrap().sync_all().unwrap();
    let half = (batches * BATCH * FRAME) as u64;
    let batch_bytes = (BATCH * FRAME) as u64;
    let (mut plain_buf, mut overlap_buf) = (vec![0u8; BATCH * FRAME], vec![0u8; BATCH * FRAME]);
    let (mut plain_i, mut overlap_i) = (0u64, 0u64);
    let (to_helper, helper_rx) = std::sync::mpsc::channel::<()>();
    let (helper_tx, from_helper) = std::sync::mpsc::channel::<()>();
    let helper = if mode == "w4thread" {
        let c = overlap_cursor.clone();
        Some(std::thread::spawn(move || {
            for () in helper_rx {
                c.sync_data().unwrap();
                helper_tx.send(()).unwrap();
            }
        }))
    } else {
        None
    };
    // The overlapped side's first batch is read before its clock starts.
    data.read_exact_at(&mut overlap_buf, half).unwrap();
    let mut plain = || {
        let t = Instant::now();
        data.read_exact_at(&mut plain_buf, plain_i * batch_bytes).unwrap();
        plain_i += 1;
        plain_cursor.write_all_at(&plain_i.to_le_bytes(), 0).unwrap();
        plain_cursor.sync_data().unwrap();
        t.elapsed().as_secs_f64() * 1e6
    };
    let mut overlapped = || {
        let t = Instant::now();
        overlap_i += 1;
        overlap_cursor.write_all_at(&overlap_i.to_le_bytes(), 0).unwrap();
        if mode == "w4thread" {
            to_helper.send(()).unwrap();
        } else {
            // SAFETY: the descriptor is open; the call reads only its arguments.
            let r = unsafe { libc::sync_file_range(overlap_cursor.as_raw_fd(), 0, 8, libc::SYNC_FILE_RANGE_WRITE) };
            assert_eq!(r, 0);
        }
        data.read_exact_at(&mut overlap_buf, half + overlap_i * batch_bytes).unwrap();
        if mode == "w4thread" {
            from_helper.recv().unwrap();
        } else {
            overlap_cursor.sync_data().unwrap();
        }
        t.elapsed().as_secs_f64() * 1e6
    };
    let (mut all_plain, mut all_overlap, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let (mut p, mut o) = (0.0, 0.0);
        let mut side = |first: bool| {
            for _ in 0..per_round {
                if first {
                    let x = plain();
                    all_plain.push(x);
                    p += x;
                } else {
                    let x = overlapped();
                    all_overlap.push(x);
                    o += x;
                }
            }
        };
        side(r % 2 == 0);
        side(r % 2 != 0);
        ratios.push(p / o);
    }
    drop(to_helper);
    if let Some(h) = helper {
        h.join().unwrap();
    }
    println!(
        "{mode}: {rounds} rounds x {per_round}: per batch plain median {:.1} us, overlapped median {:.1} us; per round plain/overlapped median {:.3} (p25 {:.3}, p75 {:.3})",
        median(&mut all_plain),
        median(&mut all_overlap),
        median(&mut ratios),
        ratios[ratios.len() / 4],
        ratios[ratios.len() * 3 / 4]
    );
}
