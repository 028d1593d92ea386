//! TCP_NODELAY on the Postgres connections. sqlx 0.9 opens them with
//! `tokio::net::TcpStream::connect` and never disables Nagle's algorithm, and it does not
//! hand out the socket. A statement larger than one segment (a 100-alert delivery is about
//! 76 KB) then ends in a small segment that Nagle holds until the server ACKs the rest, and
//! the server delays that ACK by up to 40 ms: every such write took 44 ms instead of under
//! one. libpq sets TCP_NODELAY on every connection; this does the same from outside, after
//! each connection is made, by finding the process's sockets connected to the server's port.
//! Linux only (`/proc/self/fd`); elsewhere nothing changes.

/// Sets TCP_NODELAY on every TCP socket of this process whose peer port is `port`. Returns
/// how many sockets it set it on. Sockets of other kinds and other peers are left alone.
#[cfg(target_os = "linux")]
pub fn set_on_sockets_to(port: u16) -> usize {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    fds.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&fd| peer_port(fd) == Some(port))
        .filter(|&fd| set_nodelay(fd))
        .count()
}

#[cfg(not(target_os = "linux"))]
pub fn set_on_sockets_to(_port: u16) -> usize {
    0
}

/// The peer port of `fd` when it is a connected IPv4/IPv6 socket.
#[cfg(target_os = "linux")]
pub fn peer_port(fd: i32) -> Option<u16> {
    // SAFETY: `sockaddr_storage` is plain data, valid zeroed; getpeername writes at most
    // `len` bytes into it and fails harmlessly on an fd that is not a socket (or was closed
    // since the directory was read).
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let got = unsafe { libc::getpeername(fd, (&raw mut addr).cast(), &mut len) };
    if got != 0 {
        return None;
    }
    let port = match i32::from(addr.ss_family) {
        // SAFETY: the family says which sockaddr the storage holds.
        libc::AF_INET => unsafe { (*(&raw const addr).cast::<libc::sockaddr_in>()).sin_port },
        libc::AF_INET6 => unsafe { (*(&raw const addr).cast::<libc::sockaddr_in6>()).sin6_port },
        _ => return None,
    };
    Some(u16::from_be(port))
}

#[cfg(target_os = "linux")]
fn set_nodelay(fd: i32) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `on`; on a socket that is not
    // TCP it fails with an error and changes nothing.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Whether TCP_NODELAY is set on `fd` (for tests).
#[cfg(target_os = "linux")]
pub fn has_nodelay(fd: i32) -> bool {
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `on`.
    let got = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw mut on).cast(),
            &mut len,
        )
    };
    got == 0 && on != 0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[tokio::test]
    async fn only_sockets_to_the_port_get_nodelay() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        let to_port = tokio::net::TcpStream::connect(server.local_addr().unwrap())
            .await
            .unwrap();
        let elsewhere = tokio::net::TcpStream::connect(other.local_addr().unwrap())
            .await
            .unwrap();
        assert!(!has_nodelay(to_port.as_raw_fd()), "Nagle is on by default");
        assert!(set_on_sockets_to(port) >= 1);
        assert!(has_nodelay(to_port.as_raw_fd()));
        assert!(!has_nodelay(elsewhere.as_raw_fd()));
    }
}
