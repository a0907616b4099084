//! Whole-VM save and restore over scripted vCPUs and mock host memory: the restored VM goes
//! on where the saved one stopped, and every kind of bad blob is refused with its own error
//! and leaves nothing allocated.

use alloc::vec;

use super::*;
use crate::devices::acpi_pm;
use crate::devices::snapshot::{DevicesState, RestoreError as DevicesRestoreError};
use crate::devices::uart;
use crate::persist::Persist;
use crate::snapshot::{Reader, Section, SnapshotError, Writer};
use crate::vm::{Rebuild, RestoreError, SaveError, VmDescription};

/// Rebuilds on mock host memory; the restored BSP is the scripted vCPU it holds.
struct TestRebuild {
    host: &'static MockHost,
    bsp: RefCell<Option<ScriptedVcpu>>,
}

impl TestRebuild {
    fn new(host: &'static MockHost, exits: Vec<VmExit>) -> (TestRebuild, Rc<Probe>) {
        let probe = Rc::new(Probe::default());
        let bsp = ScriptedVcpu::new(exits, InternalExits::default(), Rc::clone(&probe));
        (
            TestRebuild {
                host,
                bsp: RefCell::new(Some(bsp)),
            },
            probe,
        )
    }
}

impl Rebuild for TestRebuild {
    fn platform(&self, description: &VmDescription) -> Result<Devices, PlatformError> {
        Devices::pc(crate::devices::PlatformConfig {
            tsc_hz: 2_000_000_000,
            wall_clock_unix_seconds: 0,
            now_ns: 0,
            cpus: description.cpus,
        })
    }

    fn backend(&self, memory: GuestMemory) -> Result<Box<dyn VmBackend>, BackendError> {
        let bsp = self
            .bsp
            .borrow_mut()
            .take()
            .ok_or(BackendError::OutOfHostMemory)?;
        Ok(Box::new(ScriptedBackend::over(memory, bsp)))
    }

    fn host(&self) -> &'static dyn crate::host::HostMemory {
        self.host
    }
}

use crate::devices::PlatformError;

fn pm_timer() -> VmExit {
    VmExit::IoIn {
        port: acpi_pm::DEFAULT_BASE + acpi_pm::PM_TMR,
        size: 4,
    }
}

/// A VM that printed "ab", read the PM timer at 1 s, wrote RAM, and is paused at 2 s.
fn saved_vm() -> (Vm, Vec<u8>) {
    let (mut vm, probe) = vm([out(b'a'), pm_timer(), out(b'b')]);
    let clock = FakeClock::default();
    clock.0.set(1_000_000_000);
    for _ in 0..3 {
        vm.step(&clock);
    }
    assert_eq!(probe.completed.borrow()[..], [3_579_545]);
    vm.memory().unwrap().write(0x1234, b"guest data").unwrap();
    // The guest's COM1 scratch register: device state the restore must bring back.
    vm.devices_mut().write_port(COM1_BASE + 7, 1, 0x5A);
    clock.0.set(2_000_000_000);
    vm.pause(&clock).unwrap();
    let mut blob = Vec::new();
    let summary = vm.save(&mut blob).unwrap();
    assert_eq!(summary.memory_size, MIN_GUEST_RAM);
    assert_eq!(summary.cpus, 1);
    (vm, blob)
}

#[test]
fn a_restored_vm_goes_on_where_the_saved_one_stopped() {
    let (saved, blob) = saved_vm();
    let host = MockHost::leak(4 * 512);
    let (rebuild, probe) = TestRebuild::new(host, vec![pm_timer(), out(b'c')]);
    // Restored much later on another host clock: at 100 s.
    let clock = FakeClock::default();
    clock.0.set(100_000_000_000);
    let mut vm = Vm::restore(9, String::from("copy"), &blob, &rebuild, &clock).unwrap();
    assert_eq!(
        vm.state(),
        VmState::Paused,
        "a restored VM waits for resume"
    );
    assert_eq!((vm.id(), vm.name()), (9, "copy"));
    assert_eq!(vm.cpu_count(), 1);
    assert_eq!(vm.memory_size(), MIN_GUEST_RAM);
    let mut data = [0u8; 10];
    vm.memory().unwrap().read(0x1234, &mut data).unwrap();
    assert_eq!(&data, b"guest data");
    assert_eq!(vm.devices_mut().read_port(COM1_BASE + 7, 1), 0x5A);
    // The vCPU's TSC continues from its value at the pause (2 s at 2 GHz = 4e9 ticks).
    let state = vm.live.as_ref().unwrap().cpus[0].vcpu.as_ref().unwrap();
    assert_eq!(state.guest_tsc(clock.now().tsc), 4_000_000_000);
    assert_eq!(
        saved.live.as_ref().unwrap().cpus[0]
            .vcpu
            .as_ref()
            .unwrap()
            .save_state(4_000_000_000)
            .unwrap()
            .registers,
        state.save_state(clock.now().tsc).unwrap().registers
    );

    // Resumed at 150 s and run at 151 s: the VM has lived 2 s + 1 s.
    clock.0.set(150_000_000_000);
    vm.resume(&clock).unwrap();
    clock.0.set(151_000_000_000);
    vm.step(&clock);
    assert_eq!(probe.completed.borrow()[..], [3 * 3_579_545]);
    vm.step(&clock);
    assert_eq!(vm.console_output_since(0).0, b"c");
}

#[test]
fn only_a_paused_vm_is_saved() {
    let (mut vm, _) = vm([out(b'a')]);
    let mut blob = Vec::new();
    assert_eq!(vm.save(&mut blob).unwrap_err(), SaveError::NotPaused);
    vm.stop(StopReason::Operator);
    assert_eq!(vm.save(&mut blob).unwrap_err(), SaveError::Stopped);
    assert_eq!(
        SaveError::NotPaused.to_string(),
        "the VM is not paused: pause it first"
    );
}

/// Restores `blob` and returns the error; checks that nothing stayed allocated.
fn refused(blob: &[u8]) -> RestoreError {
    let host = MockHost::leak(4 * 512);
    let (rebuild, _) = TestRebuild::new(host, Vec::new());
    let err = Vm::restore(
        9,
        String::from("x"),
        &blob.to_vec(),
        &rebuild,
        &FakeClock::default(),
    )
    .map(|_| ())
    .unwrap_err();
    assert_eq!(
        host.frames_in_use(),
        0,
        "a failed restore leaves nothing: {err}"
    );
    err
}

#[test]
fn damaged_truncated_and_foreign_blobs_create_nothing() {
    let (_, blob) = saved_vm();
    let mut flipped = blob.clone();
    flipped[blob.len() / 2] ^= 0x04;
    let err = refused(&flipped);
    assert!(
        matches!(
            err,
            RestoreError::Snapshot(SnapshotError::ChecksumMismatch { .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("the saved VM is damaged: checksum ")
    );

    let err = refused(&blob[..blob.len() - 100]);
    assert!(
        matches!(err, RestoreError::Snapshot(SnapshotError::Truncated)),
        "{err}"
    );
    assert_eq!(err.to_string(), "the saved VM is truncated");

    let mut v9 = blob.clone();
    v9[8..12].copy_from_slice(&9u32.to_le_bytes());
    assert_eq!(
        refused(&v9).to_string(),
        "saved VM format version 9 is not supported (this build reads version 2)"
    );
}

/// Re-encodes the saved VM in `blob` with its device state changed by `change`.
fn with_devices(blob: &[u8], change: impl FnOnce(&mut DevicesState)) -> Vec<u8> {
    let reader = Reader::open(&blob).unwrap();
    let description: VmDescription = reader.section(Section::Description).unwrap();
    let loop_state: super::super::persist::LoopState = reader.section(Section::Vm).unwrap();
    let vcpus: Vec<Option<crate::vcpu::VcpuState>> = reader.section(Section::Vcpus).unwrap();
    let mut devices: DevicesState = reader.section(Section::Devices).unwrap();
    change(&mut devices);
    let memory = GuestMemory::new(MockHost::leak(512), MIN_GUEST_RAM).unwrap();
    reader.load_memory(&memory).unwrap();
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out).unwrap();
    w.section(Section::Description, &description).unwrap();
    w.section(Section::Vm, &loop_state).unwrap();
    w.section(Section::Vcpus, &vcpus).unwrap();
    w.section(Section::Devices, &devices).unwrap();
    w.memory(&memory).unwrap();
    w.finish().unwrap();
    out
}

#[test]
fn a_state_a_device_refuses_creates_nothing() {
    let (_, blob) = saved_vm();
    let bad = with_devices(&blob, |d| {
        let com1 = d.devices.iter_mut().find(|d| d.name == "COM1").unwrap();
        let mut state: uart::State = postcard::from_bytes(&com1.state).unwrap();
        // More queued input than the 16550's receive queue holds.
        state.rx = vec![b'x'; uart::INPUT_CAPACITY + 1];
        com1.state = postcard::to_allocvec(&state).unwrap();
    });
    let err = refused(&bad);
    assert!(
        matches!(
            err,
            RestoreError::Devices(DevicesRestoreError::Device { device: "COM1", .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("the saved device state is refused: COM1"),
        "{err}"
    );

    // A platform that is not the saved one (another vCPU count) is refused as well.
    let other = with_devices(&blob, |d| d.cpus = 2);
    assert!(matches!(refused(&other), RestoreError::Inconsistent(_)));
}

#[test]
fn a_state_a_vcpu_refuses_creates_nothing() {
    let (_, blob) = saved_vm();
    let reader = Reader::open(&blob).unwrap();
    let mut vcpus: Vec<Option<crate::vcpu::VcpuState>> = reader.section(Section::Vcpus).unwrap();
    // CR0.PG without CR0.PE: no CPU can be in that state.
    vcpus[0].as_mut().unwrap().registers.cr0 = 1 << 31;
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out).unwrap();
    w.section(
        Section::Description,
        &reader
            .section::<VmDescription>(Section::Description)
            .unwrap(),
    )
    .unwrap();
    w.section(
        Section::Vm,
        &reader
            .section::<super::super::persist::LoopState>(Section::Vm)
            .unwrap(),
    )
    .unwrap();
    w.section(Section::Vcpus, &vcpus).unwrap();
    w.section(
        Section::Devices,
        &reader.section::<DevicesState>(Section::Devices).unwrap(),
    )
    .unwrap();
    let memory = GuestMemory::new(MockHost::leak(512), MIN_GUEST_RAM).unwrap();
    reader.load_memory(&memory).unwrap();
    w.memory(&memory).unwrap();
    w.finish().unwrap();
    let err = refused(&out);
    assert!(matches!(err, RestoreError::Vcpu { cpu: 0, .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("the saved state of vCPU 0 is refused: vCPU state registers.cr0"),
        "{err}"
    );
}

#[test]
fn devices_persist_through_the_vm_encoding_unchanged() {
    let (vm, blob) = saved_vm();
    let reader = Reader::open(&blob).unwrap();
    let devices: DevicesState = reader.section(Section::Devices).unwrap();
    assert_eq!(devices, vm.devices().save());
}

#[test]
fn a_backend_failure_after_ram_was_loaded_frees_it() {
    let (_, blob) = saved_vm();
    let host = MockHost::leak(4 * 512);
    let (rebuild, _) = TestRebuild::new(host, Vec::new());
    rebuild.bsp.borrow_mut().take();
    let err = Vm::restore(9, String::from("x"), &blob, &rebuild, &FakeClock::default())
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, RestoreError::Backend(_)), "{err}");
    assert!(
        host.peak_frames() >= 512,
        "the RAM was allocated and loaded first"
    );
    assert_eq!(host.frames_in_use(), 0, "and freed");
}

#[test]
fn a_migrated_vm_goes_on_from_its_state_and_the_ram_sent_before_it() {
    let (saved, _) = saved_vm();
    let state = saved.migration_state().unwrap();
    // The destination's RAM, filled from memory messages (here: a copy of the source's).
    let host = MockHost::leak(4 * 512);
    let memory = GuestMemory::new(host, MIN_GUEST_RAM).unwrap();
    let mut page = vec![0u8; 4096];
    saved.memory().unwrap().read(0x1000, &mut page).unwrap();
    memory.write(0x1000, &page).unwrap();
    let (rebuild, probe) = TestRebuild::new(host, vec![pm_timer(), out(b'c')]);
    let clock = FakeClock::default();
    clock.0.set(100_000_000_000);
    let mut vm =
        Vm::restore_migrated(4, String::from("moved"), &state, memory, &rebuild, &clock).unwrap();
    assert_eq!(vm.state(), VmState::Paused);
    let mut data = [0u8; 10];
    vm.memory().unwrap().read(0x1234, &mut data).unwrap();
    assert_eq!(&data, b"guest data");
    assert_eq!(vm.devices_mut().read_port(COM1_BASE + 7, 1), 0x5A);
    vm.resume(&clock).unwrap();
    clock.0.set(101_000_000_000);
    vm.step(&clock);
    // 2 s before the pause, 1 s after the resume.
    assert_eq!(probe.completed.borrow()[..], [3 * 3_579_545]);

    // A damaged state and a RAM size that disagrees are refused.
    let (rebuild, _) = TestRebuild::new(host, vec![]);
    let memory = GuestMemory::new(host, MIN_GUEST_RAM).unwrap();
    assert!(matches!(
        Vm::restore_migrated(
            5,
            String::from("x"),
            &state[..state.len() / 2],
            memory,
            &rebuild,
            &clock
        ),
        Err(RestoreError::Snapshot(SnapshotError::Malformed { .. }))
    ));
    let memory = GuestMemory::new(host, 2 * MIN_GUEST_RAM).unwrap();
    assert!(matches!(
        Vm::restore_migrated(5, String::from("x"), &state, memory, &rebuild, &clock),
        Err(RestoreError::Inconsistent(_))
    ));
    drop(vm);
    assert_eq!(host.frames_in_use(), 0, "nothing left behind");
}

mod live_migration {
    use alloc::string::String;

    use super::*;
    use crate::migration::{
        Config, CpuView, DestinationPolicy, DestinationSession, PreCopy, Refusal, SourceOutcome,
        SourceSession, Start,
    };

    fn cpu() -> CpuView {
        CpuView {
            vendor: *b"AuthenticAMD",
            entries: crate::migration::MIGRATED_LEAVES
                .iter()
                .map(|&(leaf, subleaf)| crate::migration::CpuViewEntry {
                    leaf,
                    subleaf,
                    regs: [1, 2, 3, 4],
                })
                .collect(),
        }
    }

    fn sessions(token: &str) -> (SourceSession, DestinationSession) {
        let source = SourceSession::new(
            Start {
                keel_version: String::from("test"),
                token: String::from(token),
                cpu: cpu(),
            },
            Config {
                name: String::from("web"),
                memory_size: MIN_GUEST_RAM,
                vcpus: 1,
                images: vec![],
                vm_config: vec![],
            },
            PreCopy::new(4, 0),
        );
        let destination = DestinationSession::new(DestinationPolicy {
            tokens: vec![String::from("token-1")],
            cpu: cpu(),
            max_memory: 64 << 20,
            max_vcpus: 8,
        });
        (source, destination)
    }

    /// Moves bytes both ways until neither side has any; returns what arrived complete.
    fn exchange(
        vm: &mut Vm,
        clock: &FakeClock,
        source: &mut SourceSession,
        destination: &mut DestinationSession,
        host: &'static MockHost,
    ) -> Option<crate::migration::Arrived> {
        let mut arrived = None;
        for _ in 0..10_000 {
            source.pump(vm, clock);
            let bytes = source.output().to_vec();
            source.consume(bytes.len());
            if let Some(a) = destination.receive(&bytes, host, 5, &mut |_| Ok(())) {
                // The kernel builds and resumes the VM here, then answers.
                destination.resumed(42);
                arrived = Some(a);
            }
            let back = destination.output().to_vec();
            destination.consume(back.len());
            source.receive(vm, clock, &back);
            if bytes.is_empty() && back.is_empty() {
                break;
            }
        }
        arrived
    }

    #[test]
    fn a_vm_moves_with_the_pages_written_during_the_copy() {
        let (mut vm, _) = vm([out(b'a'), VmExit::DirtyPageWrite { gpa: 0x5008 }, out(b'b')]);
        let clock = FakeClock::default();
        vm.step(&clock);
        vm.memory().unwrap().write(0x1234, b"before").unwrap();
        let host = MockHost::leak(4 * 512);
        let (mut source, mut destination) = sessions("token-1");
        // Admission, then round 1 is queued: the guest writes while it goes out.
        source.pump(&mut vm, &clock);
        let first = source.output().to_vec();
        source.consume(first.len());
        assert!(
            destination
                .receive(&first, host, 0, &mut |_| Ok(()))
                .is_none()
        );
        let accepted = destination.output().to_vec();
        destination.consume(accepted.len());
        source.receive(&mut vm, &clock, &accepted);
        assert!(vm.vm_backend_mut().unwrap().memory_map().is_logging_dirty());
        // The guest writes through a fault and a device writes (both logged).
        vm.step(&clock);
        vm.memory().unwrap().write(0x5008, b"guest").unwrap();
        vm.memory().unwrap().write(0x1234, b"after!").unwrap();
        let arrived =
            exchange(&mut vm, &clock, &mut source, &mut destination, host).expect("the VM arrived");
        assert_eq!(*source.outcome(), SourceOutcome::Done);
        assert!(source.stats.rounds >= 2, "{:?}", source.stats);
        assert_eq!(source.stats.downtime_us, 42);
        assert!(
            vm.is_paused(),
            "the source's copy stays paused for the caller to drop"
        );
        let mut data = [0u8; 6];
        arrived.memory.read(0x1234, &mut data).unwrap();
        assert_eq!(&data, b"after!");
        let mut data = [0u8; 5];
        arrived.memory.read(0x5008, &mut data).unwrap();
        assert_eq!(&data, b"guest");
        // The destination builds it and it goes on from the saved point.
        let (rebuild, _) = TestRebuild::new(host, vec![out(b'c')]);
        let mut moved = Vm::restore_migrated(
            7,
            arrived.config.name.clone(),
            &arrived.state,
            arrived.memory,
            &rebuild,
            &clock,
        )
        .unwrap();
        assert_eq!(moved.devices_mut().read_port(COM1_BASE + 7, 1), 0);
        moved.resume(&clock).unwrap();
        moved.step(&clock);
        // Console history stays behind (as with a restore); output goes on from there.
        assert_eq!(moved.console_output_since(0).0, b"c");
    }

    #[test]
    fn a_refused_or_cut_migration_leaves_the_vm_running_here() {
        // Wrong token: refused before any memory is sent, the dirty log never started.
        let (mut vm, _) = vm([out(b'a'), out(b'b')]);
        let clock = FakeClock::default();
        let host = MockHost::leak(4 * 512);
        let (mut source, mut destination) = sessions("wrong");
        assert!(exchange(&mut vm, &clock, &mut source, &mut destination, host).is_none());
        let SourceOutcome::Failed(why) = source.outcome().clone() else {
            panic!("must fail: {:?}", source.outcome());
        };
        assert_eq!(why, Refusal::BadToken.to_string());
        assert!(!vm.is_paused());
        assert!(source.stats.pages == 0);
        vm.step(&clock);
        assert_eq!(vm.console_output_since(0).0, b"a");

        // Cut after the pause: the VM resumes and the dirty log is off.
        let (mut source, mut destination) = sessions("token-1");
        for _ in 0..100 {
            source.pump(&mut vm, &clock);
            let bytes = source.output().to_vec();
            source.consume(bytes.len());
            destination.receive(&bytes, host, 0, &mut |_| Ok(()));
            let back = destination.output().to_vec();
            destination.consume(back.len());
            // Stop delivering replies once the source paused the VM: the link is down.
            if source.has_paused_vm() {
                break;
            }
            source.receive(&mut vm, &clock, &back);
        }
        assert!(vm.is_paused(), "the test reached the pause");
        source.connection_lost(&mut vm, &clock);
        assert!(matches!(source.outcome(), SourceOutcome::Failed(_)));
        assert!(!vm.is_paused(), "resumed");
        assert!(!vm.vm_backend_mut().unwrap().memory_map().is_logging_dirty());
        vm.step(&clock);
        assert_eq!(vm.console_output_since(0).0, b"ab");
        // The destination saw the stream end early: refused, RAM freed.
        destination.end_of_stream();
        assert!(destination.is_over());
        // A refusal from the destination's own checks (an image it lacks).
        let (mut third, _) = super::vm([out(b'a')]);
        let (mut source, mut destination) = sessions("token-1");
        for _ in 0..10 {
            source.pump(&mut third, &clock);
            let bytes = source.output().to_vec();
            source.consume(bytes.len());
            destination.receive(&bytes, host, 0, &mut |_| {
                Err(Refusal::MissingImage(String::from("debian.img")))
            });
            let back = destination.output().to_vec();
            destination.consume(back.len());
            source.receive(&mut third, &clock, &back);
        }
        let SourceOutcome::Failed(why) = source.outcome().clone() else {
            panic!("must fail");
        };
        assert!(why.contains("debian.img"), "{why}");
        assert_eq!(host.frames_in_use(), 0, "the destination freed its RAM");
    }
}
