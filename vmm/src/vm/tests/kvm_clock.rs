//! kvm-clock through the VM loop: the MSRs reach the VM's [`KvmClock`] only when the backend's
//! CPUID offers it, the structures land in guest RAM with their pages dirty, and the MSR
//! values go through save and restore.

use alloc::vec;

use super::*;
use crate::pvclock::{
    KVM_FEATURES, MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_WALL_CLOCK_NEW, TIME_INFO_LEN, TimeInfo,
};
use crate::vm::{Rebuild, RestoreError, VmDescription};

/// A one-vCPU VM whose backend offers `features`, running `exits`.
fn vm_offering(features: u32, exits: Vec<VmExit>) -> (Vm, Rc<Probe>) {
    let probe = Rc::new(Probe::default());
    let vcpu = ScriptedVcpu::new(exits, InternalExits::default(), Rc::clone(&probe));
    let mut backend = ScriptedBackend::new(vcpu, Vec::new());
    backend.kvm_features = features;
    let vm = Vm::new(
        1,
        String::from("clock"),
        Box::new(backend),
        StartMode::RealMode { entry: 0x7c00 },
        Devices::pc_for_tests(),
    )
    .unwrap();
    (vm, probe)
}

fn time_info(vm: &Vm, gpa: u64) -> TimeInfo {
    let mut b = [0u8; TIME_INFO_LEN];
    vm.memory().unwrap().read(gpa, &mut b).unwrap();
    TimeInfo::from_bytes(&b)
}

fn enable(gpa: u64) -> VmExit {
    VmExit::MsrWrite {
        msr: MSR_KVM_SYSTEM_TIME_NEW,
        value: gpa | 1,
    }
}

#[test]
fn the_guest_enables_kvm_clock_and_reads_the_msr_back() {
    let (mut vm, probe) = vm_offering(
        KVM_FEATURES,
        vec![
            enable(0x3000),
            VmExit::MsrRead {
                msr: MSR_KVM_SYSTEM_TIME_NEW,
            },
            VmExit::MsrWrite {
                msr: MSR_KVM_WALL_CLOCK_NEW,
                value: 0x4000,
            },
            VmExit::MsrRead {
                msr: MSR_KVM_WALL_CLOCK_NEW,
            },
        ],
    );
    // The fake clock: 1 s of VM time, TSC at 2 GHz (the platform's rate).
    let clock = FakeClock::default();
    clock.0.set(1_000_000_000);
    for _ in 0..4 {
        vm.step(&clock);
    }
    assert_eq!(probe.faulted.get(), 0);
    assert_eq!(probe.completed.borrow()[..], [0, 0x3001, 0, 0x4000]);
    let info = time_info(&vm, 0x3000);
    assert_eq!(info.version, 2);
    assert_eq!(info.tsc_timestamp, 2_000_000_000);
    assert_eq!(info.system_time, 1_000_000_000);
    assert_eq!(
        (info.tsc_to_system_mul, info.tsc_shift),
        crate::pvclock::tsc_scale(2_000_000_000).unwrap()
    );
    // Half a second of guest TSC later, the guest reads 1.5 s.
    assert_eq!(info.guest_time(3_000_000_000), 1_500_000_000);
    let dirty = vm.vm_backend_mut().unwrap().take_dirty_pages();
    assert!(dirty.is_dirty(0x3000) && dirty.is_dirty(0x4000));
    assert!(!dirty.is_dirty(0x5000));
}

#[test]
fn without_the_feature_the_msrs_raise_gp_and_ram_is_untouched() {
    let (mut vm, probe) = vm_offering(
        0,
        vec![
            enable(0x3000),
            VmExit::MsrRead {
                msr: MSR_KVM_SYSTEM_TIME_NEW,
            },
        ],
    );
    vm.step0();
    vm.step0();
    assert_eq!(probe.faulted.get(), 2);
    assert_eq!(time_info(&vm, 0x3000), TimeInfo::default());
}

#[test]
fn an_unbacked_structure_is_accepted_and_counted() {
    let (mut vm, probe) = vm_offering(KVM_FEATURES, vec![enable(0x4000_0000)]);
    vm.step0();
    assert_eq!(probe.faulted.get(), 0);
    assert_eq!(probe.completed.borrow()[..], [0]);
    assert_eq!(vm.exit_stats().get("kvm-clock-unbacked"), 1);
}

/// Rebuilds on mock host memory with a backend offering `features`.
struct ClockRebuild {
    bsp: RefCell<Option<ScriptedVcpu>>,
    features: u32,
}

impl Rebuild for ClockRebuild {
    fn platform(
        &self,
        description: &VmDescription,
    ) -> Result<Devices, crate::devices::PlatformError> {
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
        let mut backend = ScriptedBackend::over(memory, bsp);
        backend.kvm_features = self.features;
        Ok(Box::new(backend))
    }

    fn host(&self) -> &'static dyn crate::host::HostMemory {
        MockHost::leak(4 * 512)
    }
}

fn rebuild(features: u32, exits: Vec<VmExit>) -> (ClockRebuild, Rc<Probe>) {
    let probe = Rc::new(Probe::default());
    let bsp = ScriptedVcpu::new(exits, InternalExits::default(), Rc::clone(&probe));
    (
        ClockRebuild {
            bsp: RefCell::new(Some(bsp)),
            features,
        },
        probe,
    )
}

#[test]
fn the_msrs_survive_save_and_restore() {
    let (mut vm, _) = vm_offering(KVM_FEATURES, vec![enable(0x3000)]);
    let clock = FakeClock::default();
    clock.0.set(1_000_000_000);
    vm.step(&clock);
    clock.0.set(2_000_000_000);
    vm.pause(&clock).unwrap();
    let mut blob = Vec::new();
    vm.save(&mut blob).unwrap();

    // Restored at host time 50 s: VM time and the guest TSC go on from 2 s.
    clock.0.set(50_000_000_000);
    let (rebuild_kvm, probe) = rebuild(
        KVM_FEATURES,
        vec![VmExit::MsrRead {
            msr: MSR_KVM_SYSTEM_TIME_NEW,
        }],
    );
    let mut restored = Vm::restore(2, String::from("copy"), &blob, &rebuild_kvm, &clock).unwrap();
    // The structure was rewritten for this host: the same line through (TSC, time).
    let info = time_info(&restored, 0x3000);
    assert_eq!(info.version, 4, "rewritten once more, even");
    assert_eq!(info.guest_time(4_000_000_000), 2_000_000_000);
    restored.resume(&clock).unwrap();
    restored.step(&clock);
    assert_eq!(probe.completed.borrow()[..], [0x3001]);

    // A VM that does not offer kvm-clock cannot take the guest.
    let (rebuild_none, _) = rebuild(0, Vec::new());
    match Vm::restore(3, String::from("none"), &blob, &rebuild_none, &clock) {
        Err(e @ RestoreError::KvmClockNotOffered) => {
            assert!(e.to_string().contains("cpuid.paravirt"), "{e}");
        }
        other => panic!("restored without kvm-clock: {:?}", other.map(|vm| vm.id())),
    }
}
