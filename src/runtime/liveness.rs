//! Liveness of the other processes of a run.
//!
//! A stopped peer (SIGSTOP, a machine that hangs) keeps its connections
//! open and sends nothing, so timely waits for it forever; a busy peer looks
//! the same to timely. So, once timely has connected (its listeners are
//! closed by then), each process listens again on its own hostfile address
//! and, from threads of their own, whatever its workers are doing, sends a
//! byte a second to every peer that connects. Each process reads its peers'
//! bytes: one silent for the peer timeout ends the run, naming it. A peer
//! that closes the connection (finished, or killed) is not waited for here:
//! a lost timely connection is reported by [`super::failure`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::failure;

/// How often a process tells its peers it is alive.
const BEAT: Duration = Duration::from_secs(1);

/// Starts listening on `own` and watching each of `peers` (index, address):
/// a peer silent for `timeout` ends this process with an error naming it.
pub fn watch(own: &str, peers: &[(usize, String)], timeout: Duration) {
    let listener = match TcpListener::bind(own) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!("cannot listen on {own} for liveness checks ({error}): a stopped peer will not be detected");
            return;
        }
    };
    spawn("persona:liveness", move || {
        for stream in listener.incoming().flatten() {
            spawn("persona:beat", move || beat(stream));
        }
    });
    for (process, address) in peers.iter().cloned() {
        spawn("persona:watch", move || {
            watch_peer(process, &address, timeout)
        });
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .expect("spawn a liveness thread");
}

/// Sends a byte every [`BEAT`] until the peer goes away.
fn beat(mut stream: TcpStream) {
    while stream.write_all(b".").is_ok() {
        thread::sleep(BEAT);
    }
}

/// Connects to a peer's liveness listener and reads its beats; ends the
/// process if the peer stays silent for `timeout`.
fn watch_peer(process: usize, address: &str, timeout: Duration) {
    // The peer listens once its own timely connections are made; one that
    // refuses for the whole timeout has finished or failed (timely reports
    // a failure), so it is not watched.
    let started = Instant::now();
    let mut stream = loop {
        match TcpStream::connect(address) {
            Ok(stream) => break stream,
            Err(_) if started.elapsed() < timeout => thread::sleep(Duration::from_millis(200)),
            Err(_) => return,
        }
    };
    if stream.set_read_timeout(Some(timeout)).is_err() {
        return;
    }
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                failure::exit(&format!(
                    "process {process} at {address} has not answered for {} s (--peer-timeout): it is stopped or hung",
                    timeout.as_secs()
                ));
            }
            Err(_) => return,
        }
    }
}
