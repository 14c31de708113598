//! A TCP forwarder standing in for a Kubernetes Service (or any load
//! balancer): it listens on one address and passes each connection to the
//! first of its backends that accepts it, on threads, for the test's life.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A running forwarder.
pub struct Service {
    pub addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Service {
    /// Listens on `listen` and forwards to `backends` (more can be added later).
    pub fn start(listen: &str, backends: Vec<SocketAddr>) -> Service {
        let listener = TcpListener::bind(listen).unwrap();
        let addr = listener.local_addr().unwrap();
        let backends = Arc::new(Mutex::new(backends));
        let to = backends.clone();
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                let candidates = to.lock().unwrap().clone();
                let Some(outbound) = candidates.iter().find_map(|b| TcpStream::connect(b).ok()) else { continue };
                let (mut r1, mut w1) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                let (mut r2, mut w2) = (outbound, inbound);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut r1, &mut w1);
                    let _ = w1.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut r2, &mut w2);
                    let _ = w2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Service { addr, backends }
    }

    /// Adds a backend.
    pub fn add(&self, backend: SocketAddr) {
        self.backends.lock().unwrap().push(backend);
    }
}

/// Forwards TCP connections from `listen` to `to`.
pub fn forward(listen: &str, to: SocketAddr) -> SocketAddr {
    Service::start(listen, vec![to]).addr
}
