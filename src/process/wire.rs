//! The fork server's wire: commands are `SOCK_SEQPACKET` messages with
//! their descriptors attached (`SCM_RIGHTS`); exit reports are `[pid][wait
//! status]` records on a stream socket.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

pub(crate) const FORK: u8 = b'F';
pub(crate) const CONFIGURE: u8 = b'C';
pub(crate) const SIGNAL: u8 = b'K';
pub(crate) const SIGNAL_ALL: u8 = b'A';

/// Descriptors one command may carry.
const MAX_FDS: usize = 4;

/// Decodes an exit report: `(pid, wait status)`.
pub(crate) fn decode_report(record: &[u8; 8]) -> (libc::pid_t, i32) {
    let pid = i32::from_ne_bytes(record[..4].try_into().expect("4 bytes"));
    let status = i32::from_ne_bytes(record[4..].try_into().expect("4 bytes"));
    (pid, status)
}

/// Encodes a report (also what a child sends to reach its parent).
pub(crate) fn encode_report(pid: libc::pid_t, status: i32) -> [u8; 8] {
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&pid.to_ne_bytes());
    record[4..].copy_from_slice(&status.to_ne_bytes());
    record
}

/// Writes `record` whole to a stream socket (MSG_NOSIGNAL: a vanished
/// reader is an error, not a SIGPIPE).
pub(crate) fn send_record(fd: RawFd, record: &[u8]) -> io::Result<()> {
    let mut sent = 0;
    while sent < record.len() {
        // SAFETY: sends from a buffer we own, within its length.
        let n = unsafe {
            libc::send(
                fd,
                record[sent..].as_ptr().cast(),
                record.len() - sent,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
    }
    Ok(())
}

pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: writes two descriptors into the array on success.
    let done = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if done == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub(crate) fn send_message(fd: RawFd, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    assert!(fds.len() <= MAX_FDS);
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    let mut control = [0u64; 8]; // room for CMSG_SPACE(4 fds), aligned
                                 // SAFETY: msghdr points at buffers that live across the call; the
                                 // control message is written within `control` (CMSG_SPACE of at most
                                 // MAX_FDS descriptors fits in 64 bytes).
    unsafe {
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !raw.is_empty() {
            let bytes = mem::size_of_val(raw.as_slice()) as u32;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(bytes) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as _;
            ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(cmsg).cast(), raw.len());
        }
        loop {
            if libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Receives one command: `None` at end of stream.
pub(crate) fn recv_message(fd: RawFd) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    // SAFETY: a peek with no buffer; MSG_TRUNC makes it return the length.
    let len = unsafe { libc::recv(fd, ptr::null_mut(), 0, libc::MSG_PEEK | libc::MSG_TRUNC) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut data = vec![0u8; (len as usize).max(1)];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = [0u64; 8];
    let mut fds = Vec::new();
    // SAFETY: msghdr points at buffers that live across the call; control
    // messages are read only within the length the kernel reports, and each
    // descriptor received is owned by nobody else yet.
    let n = unsafe {
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        n
    };
    if n == 0 && len == 0 {
        return Ok(None);
    }
    data.truncate(n as usize);
    Ok(Some((data, fds)))
}

pub(crate) fn int_at(data: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}
