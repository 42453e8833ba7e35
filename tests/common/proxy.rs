//! A loopback TCP relay in front of the test's S3 server: the server stays real, the
//! relay only carries bytes. It lets a test take the network away (every connection
//! cut, new ones closed at once) and give it back, and counts connections and the
//! requests in flight at once, so connection reuse and bounded concurrency can be
//! shown.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Shared {
    offline: AtomicBool,
    /// Requests wait in the relay, unanswered, until the stall ends.
    stalled: AtomicBool,
    held: AtomicUsize,
    stopping: AtomicBool,
    live: Mutex<Vec<TcpStream>>,
    accepted: AtomicUsize,
    /// Connections whose request has gone to the server and not been answered yet.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Relay {
    /// Relays a free loopback port to `upstream` (host:port).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let shared = Arc::new(Shared::default());
        let upstream = upstream.to_owned();
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stopping.load(SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    let _ = client.shutdown(Shared::BOTH);
                    continue;
                };
                let clones = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                );
                let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = clones else {
                    let _ = client.shutdown(Shared::BOTH);
                    continue;
                };
                {
                    // Under the lock `cut` takes: a connection is either refused
                    // here or registered before a cut can miss it.
                    let mut live = s.live.lock().unwrap();
                    if s.offline.load(SeqCst) {
                        let _ = client.shutdown(Shared::BOTH);
                        let _ = server.shutdown(Shared::BOTH);
                        continue;
                    }
                    live.retain(|c| c.peer_addr().is_ok());
                    live.push(c1);
                    live.push(s1);
                }
                s.accepted.fetch_add(1, SeqCst);
                let waiting = Arc::new(AtomicBool::new(false));
                for (from, to, side) in [(client, s2, Side::Request), (server, c2, Side::Answer)] {
                    let s = s.clone();
                    let waiting = waiting.clone();
                    std::thread::spawn(move || {
                        pump(from, to, side, &s, &waiting);
                        // A request whose connection closed before its answer is no
                        // longer in flight.
                        if waiting.swap(false, SeqCst) {
                            s.in_flight.fetch_sub(1, SeqCst);
                        }
                    });
                }
            }
        });
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        let mut live = self.shared.live.lock().unwrap();
        self.shared.offline.store(true, SeqCst);
        for c in live.drain(..) {
            let _ = c.shutdown(Shared::BOTH);
        }
    }

    pub fn restore(&self) {
        self.shared.offline.store(false, SeqCst);
    }

    /// From now on every request waits in the relay, unanswered, until [`Self::unstall`].
    pub fn stall(&self) {
        self.shared.stalled.store(true, SeqCst);
    }

    pub fn unstall(&self) {
        self.shared.stalled.store(false, SeqCst);
    }

    /// Requests that have waited in a stall so far.
    pub fn held(&self) -> usize {
        self.shared.held.load(SeqCst)
    }

    /// Connections made through the relay so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(SeqCst)
    }

    /// The most requests in flight at once so far: sent on and not yet answered.
    /// Unlike open connections, it does not count connections kept idle for reuse,
    /// nor one a client's pool opened in the instant before another came back to it.
    pub fn most_in_flight(&self) -> usize {
        self.shared.most_in_flight.load(SeqCst)
    }

    pub fn reset_counts(&self) {
        self.shared.accepted.store(0, SeqCst);
        self.shared
            .most_in_flight
            .store(self.shared.in_flight.load(SeqCst), SeqCst);
    }
}

impl Shared {
    const BOTH: Shutdown = Shutdown::Both;
}

/// Which way a pump carries bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Client to server: requests, held in a stall.
    Request,
    /// Server to client.
    Answer,
}

/// Carries bytes from `from` to `to`. A request that arrives while the relay is
/// stalled waits (counted once) until the stall ends. `waiting` is this connection's
/// "a request is out, no answer yet": set before a request's bytes go on and cleared
/// before an answer's do, so that (HTTP/1.1 sending one request at a time on a
/// connection) the count of connections waiting is the count of requests in flight.
fn pump(mut from: TcpStream, mut to: TcpStream, side: Side, s: &Shared, waiting: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if side == Side::Request {
                    if !waiting.swap(true, SeqCst) {
                        let now = s.in_flight.fetch_add(1, SeqCst) + 1;
                        s.most_in_flight.fetch_max(now, SeqCst);
                    }
                    if s.stalled.load(SeqCst) {
                        s.held.fetch_add(1, SeqCst);
                        while s.stalled.load(SeqCst) && !s.stopping.load(SeqCst) {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                    }
                } else if waiting.swap(false, SeqCst) {
                    s.in_flight.fetch_sub(1, SeqCst);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopping.store(true, SeqCst);
        self.unstall();
        self.cut();
        let _ = TcpStream::connect(self.addr);
    }
}
