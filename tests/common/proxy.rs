//! A loopback TCP relay in front of the test's S3 server: the server stays real, the
//! relay only carries bytes. It lets a test take the network away (every connection
//! cut, new ones closed at once) and give it back, and counts connections, so
//! connection reuse and bounded concurrency can be shown.

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
    open: AtomicUsize,
    most_open: AtomicUsize,
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
                let now = s.open.fetch_add(1, SeqCst) + 1;
                s.most_open.fetch_max(now, SeqCst);
                let done = Arc::new(AtomicUsize::new(0));
                for (from, to, hold) in [(client, s2, true), (server, c2, false)] {
                    let s = s.clone();
                    let done = done.clone();
                    std::thread::spawn(move || {
                        pump(from, to, hold.then_some(&*s));
                        // Open until either side closes: a half-closed connection
                        // carries no further request, and waiting for the other side
                        // to notice would count a connection the client let go.
                        if done.fetch_add(1, SeqCst) == 0 {
                            s.open.fetch_sub(1, SeqCst);
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

    /// The most connections open at once so far.
    pub fn most_open(&self) -> usize {
        self.shared.most_open.load(SeqCst)
    }

    pub fn reset_counts(&self) {
        self.shared.accepted.store(0, SeqCst);
        self.shared
            .most_open
            .store(self.shared.open.load(SeqCst), SeqCst);
    }
}

impl Shared {
    const BOTH: Shutdown = Shutdown::Both;
}

/// Carries bytes from `from` to `to`; with `hold`, a request that arrives while the
/// relay is stalled waits (counted once) until the stall ends.
fn pump(mut from: TcpStream, mut to: TcpStream, hold: Option<&Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(s) = hold.filter(|s| s.stalled.load(SeqCst)) {
                    s.held.fetch_add(1, SeqCst);
                    while s.stalled.load(SeqCst) && !s.stopping.load(SeqCst) {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
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
