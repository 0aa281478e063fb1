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

/// Capability numbers from `linux/capability.h`.
pub const CAP_NET_RAW: u32 = 13;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets this thread's effective and permitted capabilities to `keep`
/// (which must be a subset of what it has) and its inheritable set to
/// none. Dropping capabilities needs no privilege. For the self-test's
/// child process, which must act as a workload would.
pub fn keep_only_capabilities(keep: &[u32]) -> io::Result<()> {
    let mask = keep.iter().filter(|&&c| c < 64).fold(0u64, |m, &c| m | (1u64 << c));
    set_capabilities(mask, mask)
}

/// Sets this thread's effective and permitted capability sets to the
/// given bit masks and its inheritable set (and so its ambient set) to
/// none. `permitted` must be a subset of what the thread has, and
/// `effective` a subset of `permitted`. Threads created afterwards copy
/// the result (`caps::establish` runs before any).
pub fn set_capabilities(effective: u64, permitted: u64) -> io::Result<()> {
    let mut data = [CapData::default(); 2];
    for (i, d) in data.iter_mut().enumerate() {
        d.effective = (effective >> (32 * i)) as u32;
        d.permitted = (permitted >> (32 * i)) as u32;
    }
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    // SAFETY: capset(2) reads one header and, for version 3, exactly two
    // data structs; both live on this stack frame for the call, are
    // `repr(C)` with the kernel's layout (`__user_cap_header_struct`,
    // `__user_cap_data_struct`), and the kernel writes nothing back.
    let rc = unsafe { nix::libc::syscall(nix::libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `setsockopt(fd, level, name, &value)` for an integer option that nix
/// does not name (IPV6_FREEBIND, IPV6_UNICAST_HOPS, ...). The self-test's
/// techniques use it.
pub fn setsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: the option value is a live `c_int` on this frame, its size
    // is passed exactly, and the kernel only reads it; `fd` is a borrowed,
    // open descriptor for the duration of the call.
    let rc = unsafe {
        nix::libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as nix::libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An `AF_PACKET` raw socket bound to interface `ifindex`, for writing
/// whole Ethernet frames (the self-test's raw-frame technique; needs
/// CAP_NET_RAW).
pub fn packet_socket(ifindex: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new
    // descriptor nobody else owns, so wrapping it in OwnedFd is sound.
    let fd =
        unsafe { nix::libc::socket(nix::libc::AF_PACKET, nix::libc::SOCK_RAW | nix::libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above: `fd` is ours.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is a valid value of the plain C
    // struct; the fields that matter are set below.
    let mut sll: nix::libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = nix::libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` lives on this frame for the call and its exact size is
    // passed; bind(2) only reads it.
    let rc = unsafe {
        nix::libc::bind(
            owned.as_raw_fd(),
            (&sll as *const nix::libc::sockaddr_ll).cast(),
            std::mem::size_of::<nix::libc::sockaddr_ll>() as nix::libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(owned)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An `AF_XDP` socket bound, in copy mode, to one queue of an interface,
/// with the smallest UMEM (one page) and rings the kernel takes. Frames
/// an XSK transmits go straight to the driver, past every netfilter hook
/// (the netdev egress one included), and a queue takes one XSK only: while
/// egret holds this, nobody else can bind one there. Needs CAP_NET_RAW.
pub struct Xsk {
    fd: Option<std::os::fd::OwnedFd>,
    umem: *mut nix::libc::c_void,
}

// SAFETY: `umem` is a private anonymous mapping only this value refers to
// (never read or written through it); moving it between threads is sound.
unsafe impl Send for Xsk {}

const XSK_UMEM_LEN: usize = 4096;

impl Drop for Xsk {
    fn drop(&mut self) {
        // The socket first: closing it releases the kernel's hold on the
        // UMEM, then the mapping goes.
        drop(self.fd.take());
        // SAFETY: `umem` came from mmap of XSK_UMEM_LEN bytes in `xsk_bind`
        // and is unmapped exactly once, here.
        unsafe { nix::libc::munmap(self.umem, XSK_UMEM_LEN) };
    }
}

fn xsk_opt<T>(fd: BorrowedFd<'_>, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised `T` for the call and its exact
    // size is passed; setsockopt(2) only reads it.
    let rc = unsafe {
        nix::libc::setsockopt(
            fd.as_raw_fd(),
            nix::libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as nix::libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Binds an XSK to queue `queue` of interface `ifindex` (copy mode). The
/// error of the step that failed: EPERM without CAP_NET_RAW, EBUSY when
/// another socket holds the queue, EINVAL for a queue the device lacks.
pub fn xsk_bind(ifindex: u32, queue: u32) -> io::Result<Xsk> {
    use std::os::fd::{AsFd, FromRawFd};
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new
    // descriptor nobody else owns.
    let fd =
        unsafe { nix::libc::socket(nix::libc::AF_XDP, nix::libc::SOCK_RAW | nix::libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above: `fd` is ours.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: an anonymous private mapping takes no pointer in; the result
    // is checked against MAP_FAILED before use.
    let umem = unsafe {
        nix::libc::mmap(
            std::ptr::null_mut(),
            XSK_UMEM_LEN,
            nix::libc::PROT_READ | nix::libc::PROT_WRITE,
            nix::libc::MAP_PRIVATE | nix::libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if umem == nix::libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // From here `Drop` closes the socket and unmaps the page on every path.
    let xsk = Xsk { fd: Some(owned), umem };
    let sock = xsk.fd.as_ref().map(|f| f.as_fd()).ok_or_else(|| io::Error::other("xsk: no socket"))?;
    let reg = nix::libc::xdp_umem_reg {
        addr: umem as u64,
        len: XSK_UMEM_LEN as u64,
        chunk_size: XSK_UMEM_LEN as u32,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    xsk_opt(sock, nix::libc::XDP_UMEM_REG, &reg)?;
    let one: i32 = 1;
    for ring in [nix::libc::XDP_UMEM_FILL_RING, nix::libc::XDP_UMEM_COMPLETION_RING, nix::libc::XDP_TX_RING] {
        xsk_opt(sock, ring, &one)?;
    }
    let sxdp = nix::libc::sockaddr_xdp {
        sxdp_family: nix::libc::AF_XDP as u16,
        sxdp_flags: nix::libc::XDP_COPY,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    // SAFETY: `sxdp` lives on this frame for the call and its exact size
    // is passed; bind(2) only reads it.
    let rc = unsafe {
        nix::libc::bind(
            sock.as_raw_fd(),
            (&sxdp as *const nix::libc::sockaddr_xdp).cast(),
            std::mem::size_of::<nix::libc::sockaddr_xdp>() as nix::libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(xsk)
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
    fn capabilities_can_be_dropped() {
        // On a thread of its own: capabilities are per thread on Linux, and
        // the test runner's other threads keep theirs.
        assert_eq!(drop_all_on_a_thread().as_deref(), Ok("0000000000000000"), "capabilities left");
    }

    /// Drops every capability on a new thread and reads its CapEff back.
    fn drop_all_on_a_thread() -> Result<String, String> {
        std::thread::spawn(|| {
            keep_only_capabilities(&[]).map_err(|e| e.to_string())?;
            let status = std::fs::read_to_string("/proc/thread-self/status").map_err(|e| e.to_string())?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| "no CapEff".to_owned())
        })
        .join()
        .map_err(|_| "thread panicked".to_owned())?
    }

    #[test]
    fn listen_on_a_non_socket_is_an_error() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(listen(f.as_fd(), 16).is_err());
    }
}
