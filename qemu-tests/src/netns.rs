//! A private network namespace for one emulator, so that nothing else on the machine can take
//! the ports it needs.
//!
//! Bochs's headless display (`rfb`) listens on the first free port of 5900–5949 on `0.0.0.0`
//! and gives up ("RFB could not bind any port") when all fifty are taken — which happened in
//! CI, where other jobs share the machine's network. Started inside its own network namespace,
//! a Bochs has all fifty to itself. The harness's COM1 listener is created in the same
//! namespace (loopback brought up first), so Bochs still connects to it on 127.0.0.1 while the
//! harness reads the socket from any thread.
//!
//! Namespaces belong to threads: [`run_in_private_network`] moves the calling thread into a new
//! network namespace, runs its closure and moves the thread back; every socket the closure
//! opens and every process it spawns stays in the private namespace. (Spawning from a helper
//! thread instead would not do: the emulators run under `setpriv --pdeathsig KILL`, and the
//! "parent" whose death kills them is the spawning thread.) Creating a network namespace needs
//! `CAP_SYS_ADMIN` (root, as in CI); without it the closure runs in the shared namespace.

use std::fs::File;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// Where [`run_in_private_network`] ran the closure.
#[derive(Debug)]
pub enum Namespace {
    /// A new network namespace of its own, loopback up.
    Private,
    /// The shared namespace, because a new one could not be made (the error says why).
    Shared(io::Error),
}

/// Runs `f` on the calling thread inside a fresh network namespace with loopback up, or in
/// the shared namespace when a private one cannot be made (see [`Namespace`]). The thread is
/// back in its own namespace when this returns.
///
/// # Panics
///
/// When the thread cannot return to its namespace (it would go on in the private one).
pub fn run_in_private_network<T>(f: impl FnOnce() -> T) -> (T, Namespace) {
    let home = match File::open("/proc/thread-self/ns/net") {
        Ok(home) => home,
        Err(e) => return (f(), Namespace::Shared(e)),
    };
    // SAFETY: unshare(2) takes no pointers; CLONE_NEWNET changes only the calling thread's
    // network namespace, which `return_home` below restores.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return (f(), Namespace::Shared(io::Error::last_os_error()));
    }
    let namespace = match loopback_up() {
        Ok(()) => Namespace::Private,
        Err(e) => {
            // A namespace without loopback is of no use: run in the shared one.
            return_home(&home);
            return (f(), Namespace::Shared(e));
        }
    };
    let result = f();
    return_home(&home);
    (result, namespace)
}

/// Moves the calling thread back into the network namespace `home` refers to.
fn return_home(home: &File) {
    // SAFETY: setns(2) takes an open namespace file descriptor, valid for the whole call.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        panic!(
            "could not return the thread to its network namespace: {}",
            io::Error::last_os_error()
        );
    }
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // Any socket of the namespace carries the interface ioctls.
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: ifreq is plain old data (a name array and a union of integers and addresses);
    // all zeroes is a valid value of it.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the file descriptor is open for the whole call and `request` is a valid ifreq
    // that SIOCGIFFLAGS fills in (name set, NUL-terminated).
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut request) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS above wrote the flags member of the union, so it is the one read.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS reads the name and the flags just set.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &request) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_private_namespace_has_its_own_ports_and_a_working_loopback() {
        // A port held in the shared namespace...
        let shared = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = shared.local_addr().unwrap().port();
        let (result, namespace) = run_in_private_network(|| {
            // ...is free in the private one, and loopback carries a connection there.
            let private = TcpListener::bind(("127.0.0.1", port))?;
            let mut client = TcpStream::connect(("127.0.0.1", port))?;
            let (mut server, _) = private.accept()?;
            client.write_all(b"ping")?;
            let mut got = [0u8; 4];
            server.read_exact(&mut got)?;
            Ok::<_, io::Error>(got)
        });
        match namespace {
            Namespace::Private => assert_eq!(&result.unwrap(), b"ping"),
            // Not root: the bind above failed because the port is taken.
            Namespace::Shared(why) => {
                eprintln!("no private network namespace here ({why}); checked the fallback");
                assert_eq!(result.unwrap_err().kind(), io::ErrorKind::AddrInUse);
            }
        }
    }

    #[test]
    fn the_calling_thread_returns_to_its_namespace() {
        let here = || std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let before = here();
        let (inside, namespace) =
            run_in_private_network(|| (here(), TcpListener::bind("127.0.0.1:0").unwrap()));
        assert_eq!(here(), before);
        let (inside, listener) = inside;
        let port = listener.local_addr().unwrap().port();
        let again = TcpListener::bind(("127.0.0.1", port));
        match namespace {
            // The listener is in the private namespace, so the caller's port is still free.
            Namespace::Private => {
                assert_ne!(inside, before);
                assert!(again.is_ok(), "{again:?}");
            }
            Namespace::Shared(_) => {
                assert_eq!(inside, before);
                assert!(again.is_err());
            }
        }
    }
}
