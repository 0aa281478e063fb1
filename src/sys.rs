//! The only place with `unsafe`: thin wrappers over system calls that the
//! safe crates (std, nix) do not offer in the form egret needs. Each block
//! says why it is sound.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `listen(2)` with the backlog given as is. nix's `Backlog::new` refuses
/// values above the libc crate's `SOMAXCONN` constant, which is 128 for
/// the musl target although the kernel accepts (and clamps to
/// `net.core.somaxconn`, 4096 by default) any value: the static build
/// would otherwise be stuck with a 128-connection accept queue.
pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    // SAFETY: `fd` is a borrowed, open descriptor for the duration of the
    // call; listen(2) reads no memory of ours and only changes the state of
    // that socket. A negative or oversized backlog is clamped by the kernel.
    let rc = unsafe { nix::libc::listen(fd.as_raw_fd(), backlog) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn listen_accepts_a_backlog_above_musl_somaxconn() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listen(l.as_fd(), 4096).unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap());
        assert!(c.is_ok());
    }

    #[test]
    fn listen_on_a_non_socket_is_an_error() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(listen(f.as_fd(), 16).is_err());
    }
}
