//! A TCP relay between `etl` and a real server, which a test can cut (open connections
//! are reset, new ones closed at once) and heal: a network fault, on loopback, without
//! stopping the shared server the other tests use.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicUsize>,
    /// The connection (counted as `connections` counts) that cuts the relay, if any.
    cut_at: Arc<AtomicUsize>,
}

impl Proxy {
    /// Relays 127.0.0.1:<port> to 127.0.0.1:<target>.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let cut_at = Arc::new(AtomicUsize::new(usize::MAX));
        let (cut2, open2, accepted2) = (cut.clone(), open.clone(), accepted.clone());
        let cut_at2 = cut_at.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accepted2.fetch_add(1, Ordering::SeqCst) + 1 >= cut_at2.load(Ordering::SeqCst) {
                    cut2.store(true, Ordering::SeqCst);
                    for stream in open2.lock().unwrap().drain(..) {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                }
                if cut2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                {
                    let mut open = open2.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy {
            port,
            cut,
            open,
            accepted,
            cut_at,
        }
    }

    /// Connections made to the proxy so far, cut ones included.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// From now on every connection fails, and the open ones are reset.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Cuts the relay (as `cut` does) when the `n`th connection from now is made: that one
    /// and every later one fail, and the open ones are reset. A fault at a point of the
    /// run's requests rather than of its time.
    pub fn cut_at_connection(&self, n: usize) {
        self.cut_at.store(self.connections() + n, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.cut_at.store(usize::MAX, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
