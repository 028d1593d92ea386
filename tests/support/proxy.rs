//! A TCP proxy the test controls, between opsbot and a server it needs (Postgres): `cut`
//! drops every live connection and refuses new ones (accepted, then closed at once, as a
//! server that went away looks to a client), `restore` lets connections through again. The
//! machine's shared server is never touched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A proxy on 127.0.0.1 (a free port) to `upstream`; stops when dropped.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    /// Cancelled to drop the connections made since the last restore.
    live: Arc<std::sync::Mutex<CancellationToken>>,
    stopped: CancellationToken,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = Proxy {
            addr: listener.local_addr().expect("proxy addr"),
            up: Arc::new(AtomicBool::new(true)),
            live: Arc::default(),
            stopped: CancellationToken::new(),
        };
        let (up, live, stopped) = (proxy.up.clone(), proxy.live.clone(), proxy.stopped.clone());
        let upstream = upstream.to_owned();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                if !up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let token = live.lock().unwrap().child_token();
                tokio::spawn(forward(client, upstream.clone(), token));
            }
        });
        proxy
    }

    /// The server is gone: live connections are dropped, new ones refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut live = self.live.lock().unwrap();
        live.cancel();
        *live = CancellationToken::new();
    }

    /// The server is back.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.cancel();
        self.live.lock().unwrap().cancel();
    }
}

/// Copies bytes both ways until either side closes or `token` is cancelled, then drops
/// both sockets.
async fn forward(mut client: TcpStream, upstream: String, token: CancellationToken) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = token.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}
