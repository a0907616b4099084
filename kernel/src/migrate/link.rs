//! Live migration over TCP on the migration link (`management.migration_link`): one
//! smoltcp interface on its own NIC with a static address, a listener for incoming
//! migrations on `management.migration_port`, and at most one outgoing and one incoming
//! migration at a time. [`poll`] runs from the kernel loop and does bounded work per call
//! (the sessions stop producing output at [`OUTPUT_HIGH_WATER`], reads are capped), so a
//! migration never stalls the console or the API.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write as _;

use keel_config::schema::Config;
use keel_netstack::iface::{Addressing, NetConfig, NetStack, StaticAddress};
use keel_vmm::migration::{
    Config as MigrationConfig, CpuView, DestinationPolicy, DestinationSession, ImageRef, PreCopy,
    Refusal, SourceOutcome, SourceSession, Start,
};
use keel_vmm::vm::Clock as _;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr};

use keel_netstack::api::{Migration, MigrationDirection, MigrationPhase};

use super::records::{self, RecordId};
use crate::System;
use crate::vms::VmManager;

/// Socket buffers: large enough for a window of several memory frames.
const SOCKET_BUFFER: usize = 512 * 1024;
/// Most bytes read from a socket per poll.
const READ_BUDGET: usize = 2 * 1024 * 1024;
/// A migration with no progress for this long is abandoned.
const STALL_NS: u64 = 20_000_000_000;
/// Pre-copy: at most this many rounds, pause at this many dirty pages (1 MiB).
const MAX_ROUNDS: u32 = 30;
const SMALL_ENOUGH_PAGES: u64 = 256;
/// The vCPU limit a destination announces (the VMM's).
const MAX_VCPUS: u32 = 8;

struct Outgoing {
    key: String,
    peer: IpEndpoint,
    socket: SocketHandle,
    session: SourceSession,
    started_ns: u64,
    last_progress_ns: u64,
    record: RecordId,
}

struct Incoming {
    socket: SocketHandle,
    session: DestinationSession,
    peer: Option<IpEndpoint>,
    kvm_paravirt: bool,
    last_progress_ns: u64,
    record: RecordId,
    started_ns: u64,
}

/// The migration link and its sessions.
pub struct MigrationPlane {
    stack: NetStack,
    nic_index: usize,
    port: u16,
    listener: SocketHandle,
    incoming: Option<Incoming>,
    outgoing: Option<Outgoing>,
    next_local_port: u16,
}

/// A `vm migrate` the console asked for, for the plane's next poll (the console does not
/// hold the plane).
#[derive(Clone, Debug)]
struct Request {
    key: String,
    host: Ipv4Address,
    port: u16,
    record: RecordId,
}

static REQUEST: spin::Mutex<Option<Request>> = spin::Mutex::new(None);

/// Whether the migration link came up (so a request will be served).
static LINK_UP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Asks the plane to migrate VM `key` to `host:port` on its next poll; progress and the
/// outcome come as console lines and in [`records`] (`GET /api/v1/migrations`). Refused
/// without a link and while another outgoing migration waits or runs.
pub fn request_outgoing(
    key: &str,
    host: Ipv4Address,
    port: u16,
) -> Result<Migration, MigrateError> {
    if !LINK_UP.load(core::sync::atomic::Ordering::Relaxed) {
        return Err(MigrateError::NoLink);
    }
    let mut request = REQUEST.lock();
    if let Some(waiting) = request.as_ref() {
        return Err(MigrateError::Busy(waiting.key.clone()));
    }
    if let Some(running) = records::outgoing_under_way() {
        return Err(MigrateError::Busy(running));
    }
    let (record, migration) = records::add(
        key,
        MigrationDirection::Outgoing,
        alloc::format!("{host}:{port}"),
        MigrationPhase::Requested,
    );
    *request = Some(Request {
        key: String::from(key),
        host,
        port,
        record,
    });
    Ok(migration)
}

/// Size and SHA-256 of store file `name`; `None` when it is missing or unreadable.
fn hash_image(name: &str) -> Option<(u64, [u8; 32])> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let entry = crate::store::read_with(name, |bytes| hash.update(bytes)).ok()?;
    Some((entry.size, hash.finalize().into()))
}

/// Whether this appliance's store holds each of `images` with the same content: the
/// refusal names the first one missing or different.
fn check_images(images: &[ImageRef]) -> Result<(), Refusal> {
    for image in images {
        match hash_image(&image.name) {
            None => return Err(Refusal::MissingImage(image.name.clone())),
            Some((size, sha256)) if size != image.size || sha256 != image.sha256 => {
                return Err(Refusal::ImageDiffers(image.name.clone()));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn now_ns() -> u64 {
    crate::vms::TscClock.now().ns
}

fn tcp_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
    )
}

/// The tokens a source must present here: the migration token, else the API tokens.
fn accepted_tokens(config: &Config) -> Vec<String> {
    match &config.management.migration_token {
        Some(token) => vec![token.clone()],
        None => config.management.api_tokens.clone(),
    }
}

/// The token this appliance presents to a destination.
fn own_token(config: &Config) -> Option<String> {
    config
        .management
        .migration_token
        .clone()
        .or_else(|| config.management.api_tokens.first().cloned())
}

/// The CPU this appliance gives guests (vCPU 0 of a VM with its CPUID policy).
fn host_cpu_view() -> CpuView {
    let policy = keel_vmm::cpuid::CpuidPolicy::from_host(&crate::cpuinfo::HostCpu)
        .with_tsc_hz(crate::arch::timer::tsc_hz());
    CpuView::from_policy(&policy)
}

impl MigrationPlane {
    /// Brings up the migration link if the configuration has one; with a line for the
    /// console saying how it went.
    pub fn start(system: &System, config: &Config) -> (Option<MigrationPlane>, Option<String>) {
        match start_plane(system, config) {
            Ok(Some((plane, line))) => (Some(plane), Some(line)),
            Ok(None) => (None, None),
            Err(line) => (None, Some(line)),
        }
    }
}

fn start_plane(
    system: &System,
    config: &Config,
) -> Result<Option<(MigrationPlane, String)>, String> {
    let Some(link) = config.management.migration_link.as_ref() else {
        return Ok(None);
    };
    let wanted = link.interface.to_ascii_lowercase();
    let nics = system.nics.lock();
    let Some(nic_index) = nics.iter().position(|nic| {
        alloc::format!("{}", crate::net::Mac(nic.mac)) == wanted
            || alloc::format!("{}", nic.address) == wanted
    }) else {
        return Err(alloc::format!(
            "migration: NIC {} not found or not up ('net' lists the NICs): migrations are off",
            link.interface
        ));
    };
    let nic = &nics[nic_index];
    let mac = nic.mac;
    let label = alloc::format!("{nic}");
    drop(nics);
    let addressing = Addressing::Static(StaticAddress {
        address: Ipv4Cidr::new(link.address, link.prefix),
        gateway: None,
        dns: Vec::new(),
    });
    let mut nics = system.nics.lock();
    let Some(nic) = nics.get_mut(nic_index) else {
        return Err(String::from("migration: the NIC went away"));
    };
    let seed = crate::arch::cpu::rdtsc() ^ 0x6d69_6772;
    let mut stack = match NetStack::new(
        NetConfig::new(mac, addressing, seed),
        nic,
        crate::net::now(),
    ) {
        Ok(stack) => stack,
        Err(e) => return Err(alloc::format!("migration: link set-up failed: {e}")),
    };
    drop(nics);
    let port = config.management.migration_port;
    let mut listener = tcp_socket();
    if listener.listen(port).is_err() {
        return Err(alloc::format!("migration: cannot listen on port {port}"));
    }
    let listener = stack.sockets_mut().add(listener);
    let plane = MigrationPlane {
        stack,
        nic_index,
        port,
        listener,
        incoming: None,
        outgoing: None,
        next_local_port: 49152,
    };
    LINK_UP.store(true, core::sync::atomic::Ordering::Relaxed);
    let line = alloc::format!(
        "migration: {label} at {}/{} listening on port {port}",
        link.address,
        link.prefix
    );
    Ok(Some((plane, line)))
}

/// Why `vm migrate` could not start.
#[derive(Debug)]
pub enum MigrateError {
    /// No migration link is configured (or it did not come up).
    NoLink,
    /// One outgoing migration runs already.
    Busy(String),
    /// The VM cannot be migrated (reason given).
    Vm(String),
    /// No token to present.
    NoToken,
    /// The TCP connection could not be opened.
    Connect(String),
}

impl core::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MigrateError::NoLink => f.write_str(
                "no migration link: set management.migration_link (a NIC and a static \
                 address) and reboot",
            ),
            MigrateError::Busy(key) => write!(
                f,
                "vm {key} is being migrated: one outgoing migration at a time (GET \
                 /api/v1/migrations shows it)"
            ),
            MigrateError::Vm(why) => f.write_str(why),
            MigrateError::NoToken => f.write_str(
                "no token to present: set management.migration_token (the destination's)",
            ),
            MigrateError::Connect(why) => write!(f, "cannot connect: {why}"),
        }
    }
}

/// Starts migrating VM `key` to `host:port` on `plane`.
fn start_outgoing(
    plane: &mut MigrationPlane,
    vms: &mut VmManager,
    config: &Config,
    key: &str,
    host: Ipv4Address,
    port: u16,
    record: RecordId,
) -> Result<(), MigrateError> {
    if let Some(out) = &plane.outgoing {
        return Err(MigrateError::Busy(out.key.clone()));
    }
    let candidate = vms.migration_candidate(key).map_err(MigrateError::Vm)?;
    let token = own_token(config).ok_or(MigrateError::NoToken)?;
    // Hashing reads each image whole, here in the kernel loop: read-only images are
    // typically small (an initrd-sized root); a large one delays the loop once.
    let mut images = Vec::new();
    for spec in &candidate.disks {
        let (size, sha256) = hash_image(&spec.disk.name).ok_or_else(|| {
            MigrateError::Vm(alloc::format!(
                "cannot read its disk image '{}' from the store",
                spec.disk.name
            ))
        })?;
        images.push(ImageRef {
            name: spec.disk.name.clone(),
            size,
            sha256,
        });
    }
    let start = Start {
        keel_version: String::from(env!("CARGO_PKG_VERSION")),
        token,
        cpu: host_cpu_view(),
    };
    let migration_config = MigrationConfig {
        name: candidate.name,
        memory_size: candidate.memory_size,
        vcpus: candidate.vcpus,
        images,
        vm_config: vec![u8::from(candidate.kvm_paravirt)],
    };
    let peer = IpEndpoint::new(IpAddress::Ipv4(host), port);
    let local_port = plane.next_local_port;
    plane.next_local_port = plane
        .next_local_port
        .checked_add(1)
        .unwrap_or(49152)
        .max(49152);
    let socket = plane.stack.sockets_mut().add(tcp_socket());
    let (iface, sockets) = plane.stack.parts_mut();
    if let Err(e) =
        sockets
            .get_mut::<tcp::Socket>(socket)
            .connect(iface.context(), peer, local_port)
    {
        sockets.remove(socket);
        return Err(MigrateError::Connect(alloc::format!("{e}")));
    }
    let now = now_ns();
    plane.outgoing = Some(Outgoing {
        key: String::from(key),
        peer,
        socket,
        session: SourceSession::new(
            start,
            migration_config,
            PreCopy::new(MAX_ROUNDS, SMALL_ENOUGH_PAGES),
        ),
        started_ns: now,
        last_progress_ns: now,
        record,
    });
    Ok(())
}

impl MigrationPlane {
    /// Runs the link and the migrations once; appends console lines to `out`. Returns
    /// whether anything moved.
    pub fn poll(
        &mut self,
        system: &System,
        vms: &mut VmManager,
        config: &Config,
        out: &mut String,
    ) -> bool {
        let request = REQUEST.lock().take();
        if let Some(r) = request {
            match start_outgoing(self, vms, config, &r.key, r.host, r.port, r.record) {
                Ok(()) => {
                    records::update(r.record, |m| m.phase = MigrationPhase::Running);
                    let _ = writeln!(out, "vm {}: migrating to {}:{}", r.key, r.host, r.port);
                }
                Err(e) => {
                    records::fail(r.record, alloc::format!("{e}"), Some(0));
                    let _ = writeln!(out, "error: vm migrate {}: {e}", r.key);
                }
            }
        }
        let mut moved = self.poll_link(system);
        moved |= self.poll_outgoing(vms, out);
        moved |= self.poll_incoming(system, vms, config, out);
        moved |= self.poll_link(system);
        moved
    }
}

/// Reads at most [`READ_BUDGET`] bytes from `socket`.
fn read_some(socket: &mut tcp::Socket) -> Vec<u8> {
    let mut bytes = Vec::new();
    while bytes.len() < READ_BUDGET && socket.can_recv() {
        let got = socket.recv(|buf| {
            let n = buf.len().min(READ_BUDGET - bytes.len());
            (n, buf[..n].to_vec())
        });
        match got {
            Ok(chunk) if !chunk.is_empty() => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes
}

impl MigrationPlane {
    fn poll_link(&mut self, system: &System) -> bool {
        let mut nics = system.nics.lock();
        let Some(nic) = nics.get_mut(self.nic_index) else {
            return false;
        };
        self.stack.poll(crate::net::now(), nic)
    }

    fn poll_outgoing(&mut self, vms: &mut VmManager, out: &mut String) -> bool {
        let Some(o) = self.outgoing.as_mut() else {
            return false;
        };
        let now = now_ns();
        let clock = crate::vms::TscClock;
        let Some(vm) = vms.live_vm_mut(&o.key) else {
            let _ = writeln!(
                out,
                "migration of vm {} to {} abandoned: the VM stopped",
                o.key, o.peer
            );
            records::fail(
                o.record,
                String::from("the VM stopped"),
                Some(now.saturating_sub(o.started_ns) / 1_000_000),
            );
            self.stack.sockets_mut().remove(o.socket);
            self.outgoing = None;
            return true;
        };
        let socket = self.stack.sockets_mut().get_mut::<tcp::Socket>(o.socket);
        let mut moved = false;
        let replies = read_some(socket);
        if !replies.is_empty() {
            o.session.receive(vm, &clock, &replies);
            o.last_progress_ns = now;
            moved = true;
        }
        if socket.may_send() {
            o.session.pump(vm, &clock);
            let pending = o.session.output();
            if !pending.is_empty() {
                let sent = socket.send_slice(pending).unwrap_or(0);
                if sent > 0 {
                    o.session.consume(sent);
                    o.last_progress_ns = now;
                    moved = true;
                }
            }
        }
        let closed = matches!(
            socket.state(),
            tcp::State::Closed | tcp::State::TimeWait | tcp::State::CloseWait
        ) && !socket.can_recv();
        let connecting = matches!(
            socket.state(),
            tcp::State::SynSent | tcp::State::SynReceived
        );
        if matches!(o.session.outcome(), SourceOutcome::InProgress) {
            if closed {
                o.session.connection_lost(vm, &clock);
            } else if now.saturating_sub(o.last_progress_ns) > STALL_NS {
                let why = if connecting {
                    "no answer from the destination (is its migration link up?)"
                } else {
                    "the destination stopped answering"
                };
                o.session.abandon(vm, &clock, why);
            }
        }
        match o.session.outcome().clone() {
            SourceOutcome::InProgress => moved,
            SourceOutcome::Done => {
                let s = o.session.stats;
                let total_ms = now.saturating_sub(o.started_ns) / 1_000_000;
                records::update(o.record, |m| {
                    m.phase = MigrationPhase::Done;
                    m.rounds = s.rounds;
                    m.bytes_sent = s.bytes;
                    m.total_ms = Some(total_ms);
                    m.downtime_ms = Some(s.downtime_us / 1000);
                });
                let _ = writeln!(
                    out,
                    "vm {} migrated to {}: {} rounds, {} MiB sent ({} pages after the pause), \
                     total {} ms, downtime {} ms",
                    o.key,
                    o.peer.addr,
                    s.rounds,
                    s.bytes >> 20,
                    s.paused_pages,
                    total_ms,
                    s.downtime_us / 1000
                );
                let key = o.key.clone();
                socket.close();
                self.outgoing = None;
                vms.remove_migrated(&key);
                true
            }
            SourceOutcome::Failed(why) => {
                let s = o.session.stats;
                records::update(o.record, |m| {
                    m.rounds = s.rounds;
                    m.bytes_sent = s.bytes;
                });
                records::fail(
                    o.record,
                    alloc::format!("{why}; the VM runs on here"),
                    Some(now.saturating_sub(o.started_ns) / 1_000_000),
                );
                let _ = writeln!(
                    out,
                    "migration of vm {} to {} abandoned: {why}; the VM runs on here",
                    o.key, o.peer
                );
                // Best effort: the abort message, then the connection goes.
                let pending = o.session.output().to_vec();
                let _ = socket.send_slice(&pending);
                socket.close();
                let handle = o.socket;
                self.outgoing = None;
                // The socket is dropped once closed; smoltcp keeps sending its FIN till then.
                self.stack.sockets_mut().remove(handle);
                true
            }
        }
    }

    fn poll_incoming(
        &mut self,
        system: &System,
        vms: &mut VmManager,
        config: &Config,
        out: &mut String,
    ) -> bool {
        let now = now_ns();
        // A connection on the listener becomes the incoming session; a fresh listener
        // takes its place.
        if self.incoming.is_none() {
            let listener = self
                .stack
                .sockets_mut()
                .get_mut::<tcp::Socket>(self.listener);
            if listener.is_active() && listener.state() != tcp::State::Listen {
                let peer = listener.remote_endpoint();
                let mut fresh = tcp_socket();
                if fresh.listen(self.port).is_ok() {
                    let socket = core::mem::replace(&mut self.listener, {
                        self.stack.sockets_mut().add(fresh)
                    });
                    let from = peer
                        .map(|p| alloc::format!("{}", p.addr))
                        .unwrap_or_else(|| String::from("?"));
                    let (record, _) = records::add(
                        "",
                        MigrationDirection::Incoming,
                        from,
                        MigrationPhase::Running,
                    );
                    self.incoming = Some(Incoming {
                        record,
                        started_ns: now,
                        socket,
                        session: DestinationSession::new(DestinationPolicy {
                            tokens: accepted_tokens(config),
                            cpu: host_cpu_view(),
                            max_memory: keel_vmm::memory::MAX_GUEST_RAM,
                            max_vcpus: MAX_VCPUS,
                        }),
                        peer,
                        kvm_paravirt: false,
                        last_progress_ns: now,
                    });
                }
            }
        }
        let Some(inc) = self.incoming.as_mut() else {
            return false;
        };
        let socket = self.stack.sockets_mut().get_mut::<tcp::Socket>(inc.socket);
        let mut moved = false;
        let bytes = read_some(socket);
        if !bytes.is_empty() {
            moved = true;
            inc.last_progress_ns = now;
            let mut kvm_paravirt = inc.kvm_paravirt;
            let arrived = inc.session.receive(
                &bytes,
                VmManager::staging_host(),
                now,
                &mut |c: &MigrationConfig| {
                    check_images(&c.images)?;
                    kvm_paravirt = c.vm_config.first() == Some(&1);
                    Ok(())
                },
            );
            inc.kvm_paravirt = kvm_paravirt;
            if let Some(name) = inc.session.vm_name() {
                let name = String::from(name);
                records::update(inc.record, |m| m.vm = name);
            }
            if let Some(arrived) = arrived {
                let from = inc
                    .peer
                    .map(|p| alloc::format!("{}", p.addr))
                    .unwrap_or_else(|| String::from("?"));
                let paused_at = inc.session.paused_at_ns.unwrap_or(now);
                // The downtime up to the resume is known once the VM runs: the source line
                // is written after it, with the figure.
                // The images were checked at `Config`; they attach read-only, in order.
                let disk_specs: Vec<crate::vms::disks::DiskSpec> = arrived
                    .config
                    .images
                    .iter()
                    .map(|image| crate::vms::disks::DiskSpec {
                        disk: crate::store::claims::DiskName::file(&image.name),
                        read_only: true,
                        serial: None,
                    })
                    .collect();
                match vms.adopt_migrated(
                    system,
                    &arrived.state,
                    arrived.memory,
                    inc.kvm_paravirt,
                    &disk_specs,
                    alloc::format!("migrated from {from}"),
                ) {
                    Ok(id) => {
                        let downtime_us = now_ns().saturating_sub(paused_at) / 1000;
                        let (rounds, _) = inc.session.progress();
                        let total_ms = now.saturating_sub(inc.started_ns) / 1_000_000;
                        records::update(inc.record, |m| {
                            m.vm = arrived.config.name.clone();
                            m.phase = MigrationPhase::Done;
                            m.rounds = rounds;
                            m.total_ms = Some(total_ms);
                            m.downtime_ms = Some(downtime_us / 1000);
                            m.message = Some(alloc::format!(
                                "runs here as vm {id} ('{}')",
                                arrived.config.name
                            ));
                        });
                        vms.set_source(
                            id,
                            alloc::format!(
                                "migrated from {from} (downtime {} ms)",
                                downtime_us / 1000
                            ),
                        );
                        inc.session.resumed(downtime_us);
                        let _ = writeln!(
                            out,
                            "vm {id} migrated in from {from} ('{}', downtime {} ms)",
                            arrived.config.name,
                            downtime_us / 1000
                        );
                    }
                    Err(why) => {
                        let _ = writeln!(out, "incoming migration from {from} refused: {why}");
                        inc.session.refuse(Refusal::Build(why));
                    }
                }
            }
        }
        let pending = inc.session.output();
        if !pending.is_empty() && socket.can_send() {
            let sent = socket.send_slice(pending).unwrap_or(0);
            inc.session.consume(sent);
            moved |= sent > 0;
        }
        // The source closed its side (a socket still opening cannot receive yet either).
        let peer_closed = matches!(
            socket.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
                | tcp::State::Closed
        ) && !socket.can_recv();
        if peer_closed && !inc.session.is_over() {
            inc.session.end_of_stream();
        }
        if !inc.session.is_over() && now.saturating_sub(inc.last_progress_ns) > STALL_NS {
            inc.session
                .refuse(Refusal::Stream(String::from("the source stopped sending")));
        }
        if let Some(refusal) = inc.session.refusal() {
            let why = alloc::format!("refused: {refusal}");
            let name = inc.session.vm_name().map(String::from);
            let total_ms = now.saturating_sub(inc.started_ns) / 1_000_000;
            if let Some(name) = name {
                records::update(inc.record, |m| m.vm = name);
            }
            records::fail(inc.record, why, Some(total_ms));
        }
        if inc.session.is_over() {
            if inc.session.output().is_empty() {
                socket.close();
            }
            let done = matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait)
                || (peer_closed && inc.session.output().is_empty());
            if done {
                let handle = inc.socket;
                self.incoming = None;
                self.stack.sockets_mut().remove(handle);
                moved = true;
            }
        }
        moved
    }
}
