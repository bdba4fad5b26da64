//! How the ranks of a job agree on NCCL's unique id before `ncclCommInitRank`.
//!
//! Rank 0 creates the id (`ncclGetUniqueId`) and serves it over TCP on `MASTER_ADDR` (which torchrun and
//! the README's Slurm recipe export) at port `MASTER_PORT + 1` (torchrun's agent holds `MASTER_PORT`
//! itself; `$SETDINO_RDZV_PORT` overrides): it listens on the port, accepts W − 1 connections and writes
//! to each the message below. Every other rank connects, retrying until rank 0 listens, and reads it. The message is
//! `b"SETDINO-NCCL-ID\0"` (16 bytes), the world size (u32, little-endian) and the 128-byte id; a rank
//! whose world size differs refuses it, so two jobs that share a port cannot join each other.
//! Both sides give up after `timeout` with an error that names the address.
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 16] = b"SETDINO-NCCL-ID\0";
/// The size of `ncclUniqueId`.
pub const ID_BYTES: usize = 128;

fn message(world: usize, id: &[u8; ID_BYTES]) -> Result<Vec<u8>> {
    let w = u32::try_from(world).context("world size does not fit in u32")?;
    let mut m = MAGIC.to_vec();
    m.extend_from_slice(&w.to_le_bytes());
    m.extend_from_slice(id);
    Ok(m)
}

/// Rank 0: serve `id` to the other `world − 1` ranks on `port` (all interfaces).
pub fn serve(port: u16, world: usize, id: &[u8; ID_BYTES], timeout: Duration) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).with_context(|| {
        format!("rank 0: listening on port {port} ($MASTER_PORT + 1, or $SETDINO_RDZV_PORT) for the other ranks; HINT: pick a free port")
    })?;
    serve_on(listener, world, id, timeout)
}

/// [`serve`] on a bound listener (tests bind port 0).
pub fn serve_on(
    listener: TcpListener,
    world: usize,
    id: &[u8; ID_BYTES],
    timeout: Duration,
) -> Result<()> {
    let msg = message(world, id)?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let mut served = 0;
    while served + 1 < world {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false)?;
                s.write_all(&msg)
                    .context("rank 0: sending the NCCL id to a rank")?;
                served += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    bail!(
                        "rank 0: only {served} of {} ranks fetched the NCCL id from port {port} within {:?}; HINT: are all ranks started, with the same MASTER_ADDR/MASTER_PORT?",
                        world - 1,
                        timeout
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("rank 0: accepting a rank's connection"),
        }
    }
    Ok(())
}

/// Ranks 1…W−1: fetch the id from rank 0 at `addr:port`.
pub fn fetch(addr: &str, port: u16, world: usize, timeout: Duration) -> Result<[u8; ID_BYTES]> {
    let deadline = Instant::now() + timeout;
    let target = format!("{addr}:{port}");
    let mut stream = loop {
        let tried = target
            .to_socket_addrs()
            .with_context(|| format!("resolving $MASTER_ADDR and the rendezvous port: {target}"))
            .and_then(|mut it| {
                it.next()
                    .with_context(|| format!("{target} resolves to no address"))
            })
            .and_then(|a| {
                TcpStream::connect_timeout(&a, Duration::from_secs(2))
                    .with_context(|| format!("connecting to rank 0 at {target}"))
            });
        match tried {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!(
                    "rank 0 did not serve the NCCL id at {target} within {timeout:?}"
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    stream.set_read_timeout(Some(timeout))?;
    let mut m = vec![0u8; MAGIC.len() + 4 + ID_BYTES];
    stream
        .read_exact(&mut m)
        .with_context(|| format!("reading the NCCL id from rank 0 at {target}"))?;
    if &m[..MAGIC.len()] != MAGIC {
        bail!("{target} is not a setdino rank 0 (unexpected greeting); HINT: another service uses $MASTER_PORT");
    }
    let mut w = [0u8; 4];
    w.copy_from_slice(&m[MAGIC.len()..MAGIC.len() + 4]);
    let theirs = u32::from_le_bytes(w);
    if usize::try_from(theirs).ok() != Some(world) {
        bail!("rank 0 at {target} runs a job of {theirs} ranks, this rank was started for {world}");
    }
    let mut id = [0u8; ID_BYTES];
    id.copy_from_slice(&m[MAGIC.len() + 4..]);
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_receives_rank_zeros_id() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut id = [0u8; ID_BYTES];
        for (i, b) in id.iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        let t = Duration::from_secs(20);
        let got = std::thread::scope(|s| {
            let server = s.spawn(|| serve_on(listener, 4, &id, t));
            let clients: Vec<_> = (0..3)
                .map(|_| s.spawn(|| fetch("127.0.0.1", port, 4, t)))
                .collect();
            let got: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
            server.join().unwrap().unwrap();
            got
        });
        for g in got {
            assert_eq!(g.unwrap(), id);
        }
    }

    #[test]
    fn a_rank_of_another_world_size_is_refused_and_a_missing_rank_times_out() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let id = [9u8; ID_BYTES];
        let (server, client) = std::thread::scope(|s| {
            let server = s.spawn(|| serve_on(listener, 3, &id, Duration::from_millis(600)));
            let client = fetch("127.0.0.1", port, 2, Duration::from_secs(20));
            (server.join().unwrap(), client)
        });
        let c = format!("{:#}", client.unwrap_err());
        assert!(c.contains("job of 3 ranks"), "{c}");
        let s = format!("{:#}", server.unwrap_err());
        assert!(s.contains("only 1 of 2 ranks"), "{s}");
    }
}
