//! A model of an AHCI HBA with SATA disks, for the host tests: a register file with the
//! side effects the driver relies on (ST/CR, FRE/FR, write-1-to-clear PxIS/PxSERR, PxCI,
//! CLO, COMRESET) and a device that reads the command list and table from the model's DMA
//! memory and executes IDENTIFY, READ/WRITE DMA EXT and FLUSH CACHE EXT, or fails on demand.

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use super::ata;
use super::port::{DmaMemory, Hba};
use super::regs::{self, AtaCommand, ghc, port};

/// Where the model's DMA memory starts (physical address of its first byte).
pub const MEMORY_BASE: u64 = 0x10_0000;

/// One SATA port of the model and what is attached to it.
pub struct PortModel {
    /// Register file, indexed by offset / 4.
    pub regs: [u32; 32],
    /// The disk's sectors.
    pub disk: Vec<u8>,
    /// IDENTIFY DEVICE data.
    pub identify: [u8; 512],
    /// The device never leaves BSY.
    pub stuck_busy: bool,
    /// The next command fails with this (status, error).
    pub fail_next: Option<(u8, u8)>,
    /// The next command never completes (and leaves the device BSY until a reset).
    pub hang_next: bool,
    /// Whether a COMRESET clears a hung device.
    pub comreset_clears: bool,
    /// The command list engine never stops (PxCMD.CR stays set once running).
    pub engine_stuck: bool,
    /// Model time (ms) at which the link comes up once PxCMD.SUD is set; until then (and
    /// without SUD) PxSSTS.DET reads 1.
    pub link_up_after_spin_up: Option<u64>,
    /// When PxCMD.SUD was set.
    pub spun_up_at: Option<u64>,
    /// Commands executed.
    pub commands: Vec<AtaCommand>,
    /// Flushes executed.
    pub flushes: usize,
}

impl PortModel {
    /// A port with an ATA disk of `sectors` sectors, link up, idle.
    pub fn disk(sectors: u64) -> PortModel {
        let mut p = PortModel::empty();
        p.disk = vec![0; sectors as usize * 512];
        p.identify = ata::identify_data("QEMU HARDDISK", "QM00001", sectors, 512);
        p.regs[(port::SSTS / 4) as usize] = 0x113;
        p.regs[(port::SIG / 4) as usize] = port::SIG_ATA;
        p.regs[(port::TFD / 4) as usize] = 0x50;
        p
    }

    /// A port with nothing attached.
    pub fn empty() -> PortModel {
        let mut regs = [0u32; 32];
        regs[(port::SIG / 4) as usize] = 0xFFFF_FFFF;
        regs[(port::TFD / 4) as usize] = 0x7F;
        PortModel {
            regs,
            disk: Vec::new(),
            identify: [0; 512],
            stuck_busy: false,
            fail_next: None,
            hang_next: false,
            comreset_clears: true,
            engine_stuck: false,
            link_up_after_spin_up: None,
            spun_up_at: None,
            commands: Vec::new(),
            flushes: 0,
        }
    }

    fn reg(&self, r: u32) -> u32 {
        self.regs[(r / 4) as usize]
    }

    fn set(&mut self, r: u32, v: u32) {
        self.regs[(r / 4) as usize] = v;
    }
}

/// The HBA model: generic registers, ports, DMA memory, a clock and a write log.
pub struct Model {
    /// CAP.
    pub cap: u32,
    /// GHC.
    pub ghc: u32,
    /// CAP2.
    pub cap2: u32,
    /// BOHC.
    pub bohc: u32,
    /// The ports (PI has a bit for each).
    pub ports: Vec<PortModel>,
    /// DMA memory from [`MEMORY_BASE`].
    pub memory: Vec<u8>,
    /// Every register write, in order: (offset from ABAR, value).
    pub log: Vec<(u32, u32)>,
    /// Model time in ms: each `expired` check advances it by 1.
    pub now_ms: u64,
    /// Refuse allocations (out of memory).
    pub no_memory: bool,
    /// Bytes of DMA memory the driver leaked (ports that would not stop).
    pub leaked: usize,
}

/// A handle on the model: what the driver gets as its [`Hba`].
#[derive(Clone)]
pub struct ModelHba(pub Rc<RefCell<Model>>);

/// DMA memory in the model.
pub struct ModelMemory {
    model: Rc<RefCell<Model>>,
    phys: u64,
    len: usize,
}

impl ModelHba {
    /// An HBA with `ports`, 64-bit addressing, CLO, 32 slots.
    pub fn new(ports: Vec<PortModel>) -> ModelHba {
        let cap = ghc::CAP_S64A | ghc::CAP_SCLO | (31 << 8) | (ports.len() as u32 - 1);
        ModelHba(Rc::new(RefCell::new(Model {
            cap,
            ghc: 0,
            cap2: 0,
            bohc: 0,
            ports,
            memory: Vec::new(),
            log: Vec::new(),
            now_ms: 0,
            no_memory: false,
            leaked: 0,
        })))
    }

    /// Runs `f` on port `i` of the model.
    pub fn port<R>(&self, i: usize, f: impl FnOnce(&mut PortModel) -> R) -> R {
        f(&mut self.0.borrow_mut().ports[i])
    }

    /// The register write log.
    pub fn log(&self) -> Vec<(u32, u32)> {
        self.0.borrow().log.clone()
    }

    /// Model time in ms.
    pub fn now_ms(&self) -> u64 {
        self.0.borrow().now_ms
    }
}

impl Model {
    fn mem(&self, phys: u64, len: usize) -> &[u8] {
        let at = (phys - MEMORY_BASE) as usize;
        &self.memory[at..at + len]
    }

    fn mem_mut(&mut self, phys: u64, len: usize) -> &mut [u8] {
        let at = (phys - MEMORY_BASE) as usize;
        &mut self.memory[at..at + len]
    }

    fn write_port(&mut self, i: usize, reg: u32, value: u32) {
        let now_ms = self.now_ms;
        let p = &mut self.ports[i];
        match reg {
            port::IS | port::SERR => {
                let old = p.reg(reg);
                p.set(reg, old & !value);
            }
            port::CMD => {
                let was_running = p.reg(port::CMD) & port::CMD_CR != 0;
                if value & port::CMD_SUD != 0 && p.spun_up_at.is_none() {
                    p.spun_up_at = Some(now_ms);
                }
                let mut v = value & !(port::CMD_CR | port::CMD_FR);
                if v & port::CMD_ST != 0 || (p.engine_stuck && was_running) {
                    v |= port::CMD_CR;
                } else {
                    p.set(port::CI, 0);
                }
                if v & port::CMD_FRE != 0 {
                    v |= port::CMD_FR;
                }
                if v & port::CMD_CLO != 0 {
                    if !p.stuck_busy {
                        let tfd = p.reg(port::TFD) & !(port::TFD_BSY | port::TFD_DRQ);
                        p.set(port::TFD, tfd);
                    }
                    v &= !port::CMD_CLO;
                }
                p.set(port::CMD, v);
            }
            port::SCTL => {
                let was_reset = p.reg(port::SCTL) & 0xF == 1;
                p.set(port::SCTL, value);
                if was_reset && value & 0xF == 0 && p.comreset_clears && !p.stuck_busy {
                    p.set(port::TFD, 0x50);
                }
            }
            port::CI => {
                let ci = p.reg(port::CI) | value;
                p.set(port::CI, ci);
                if ci & 1 != 0 && p.reg(port::CMD) & port::CMD_ST != 0 {
                    self.execute(i);
                }
            }
            _ => p.set(reg, value),
        }
    }

    /// Executes the command in slot 0 of port `i`, as the HBA and the device would.
    fn execute(&mut self, i: usize) {
        let clb = {
            let p = &self.ports[i];
            u64::from(p.reg(port::CLB)) | (u64::from(p.reg(port::CLBU)) << 32)
        };
        let header = self.mem(clb, 32).to_vec();
        let dw0 = u32::from_le_bytes(header[0..4].try_into().unwrap());
        let ctba = u64::from(u32::from_le_bytes(header[8..12].try_into().unwrap()))
            | (u64::from(u32::from_le_bytes(header[12..16].try_into().unwrap())) << 32);
        let prdtl = (dw0 >> 16) as usize;
        let write = dw0 & (1 << 6) != 0;
        assert_eq!(dw0 & 0x1F, 5, "CFL must be 5 dwords");
        let fis = self.mem(ctba, 20).to_vec();
        assert_eq!(fis[0], regs::FIS_TYPE_H2D);
        assert_eq!(fis[1] & 0x80, 0x80, "C bit");
        let command = regs::parse_h2d_fis(&fis);
        let mut prdt = Vec::new();
        for e in 0..prdtl {
            let entry = self.mem(ctba + 0x80 + 16 * e as u64, 16).to_vec();
            let dba = u64::from(u32::from_le_bytes(entry[0..4].try_into().unwrap()))
                | (u64::from(u32::from_le_bytes(entry[4..8].try_into().unwrap())) << 32);
            let dbc = (u32::from_le_bytes(entry[12..16].try_into().unwrap()) & 0x3F_FFFF) + 1;
            assert_eq!(dbc % 2, 0, "byte counts are even");
            prdt.push((dba, dbc as usize));
        }
        let p = &mut self.ports[i];
        p.commands.push(command);
        if p.hang_next {
            p.hang_next = false;
            p.set(port::TFD, 0x80);
            return;
        }
        if let Some((status, error)) = p.fail_next.take() {
            p.set(port::TFD, (u32::from(error) << 8) | u32::from(status));
            let is = p.reg(port::IS) | port::IS_TFES;
            p.set(port::IS, is);
            return;
        }
        let bytes = usize::from(command.count) * 512;
        let range = command.lba as usize * 512..command.lba as usize * 512 + bytes;
        let outcome: Result<(), u8> = match command.opcode {
            ata::IDENTIFY_DEVICE => {
                let data = p.identify;
                self.scatter(&prdt, &data);
                Ok(())
            }
            ata::READ_DMA_EXT if range.end <= p.disk.len() && !write => {
                let data = p.disk[range].to_vec();
                self.scatter(&prdt, &data);
                Ok(())
            }
            ata::WRITE_DMA_EXT if range.end <= p.disk.len() && write => {
                let data = self.gather(&prdt, bytes);
                self.ports[i].disk[range].copy_from_slice(&data);
                Ok(())
            }
            ata::READ_DMA_EXT | ata::WRITE_DMA_EXT => Err(0x10), // IDNF
            ata::FLUSH_CACHE_EXT => {
                p.flushes += 1;
                Ok(())
            }
            _ => Err(0x04), // ABRT
        };
        let p = &mut self.ports[i];
        match outcome {
            Ok(()) => {
                p.set(port::TFD, 0x50);
                let ci = p.reg(port::CI) & !1;
                p.set(port::CI, ci);
                let is = p.reg(port::IS) | 1;
                p.set(port::IS, is);
            }
            Err(error) => {
                p.set(port::TFD, (u32::from(error) << 8) | 0x51);
                let is = p.reg(port::IS) | port::IS_TFES;
                p.set(port::IS, is);
            }
        }
    }

    fn scatter(&mut self, prdt: &[(u64, usize)], mut data: &[u8]) {
        for &(phys, len) in prdt {
            let n = len.min(data.len());
            self.mem_mut(phys, n).copy_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    fn gather(&self, prdt: &[(u64, usize)], bytes: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for &(phys, len) in prdt {
            out.extend_from_slice(self.mem(phys, len));
        }
        out.truncate(bytes);
        out
    }
}

impl Hba for ModelHba {
    type Memory = ModelMemory;
    type Deadline = u64;

    fn read(&self, offset: u32) -> u32 {
        let m = self.0.borrow();
        match offset {
            ghc::CAP => m.cap,
            ghc::GHC => m.ghc,
            ghc::PI => (1u32 << m.ports.len()) - 1,
            ghc::CAP2 => m.cap2,
            ghc::BOHC => m.bohc,
            o if o >= 0x100 => {
                let i = ((o - 0x100) / 0x80) as usize;
                let reg = (o - 0x100) % 0x80;
                let p = &m.ports[i];
                if reg == port::TFD && p.stuck_busy {
                    return 0x80;
                }
                if let (port::SSTS, Some(after)) = (reg, p.link_up_after_spin_up) {
                    let up = p.spun_up_at.is_some_and(|at| m.now_ms >= at + after);
                    if !up {
                        return (p.reg(reg) & !0xF) | port::DET_NO_PHY;
                    }
                }
                p.reg(reg)
            }
            _ => 0,
        }
    }

    fn write(&mut self, offset: u32, value: u32) {
        let mut m = self.0.borrow_mut();
        m.log.push((offset, value));
        match offset {
            ghc::GHC => m.ghc = value,
            ghc::BOHC => m.bohc = value,
            o if o >= 0x100 => {
                let i = ((o - 0x100) / 0x80) as usize;
                m.write_port(i, (o - 0x100) % 0x80, value);
            }
            _ => {}
        }
    }

    fn alloc(&mut self, bytes: usize) -> Option<ModelMemory> {
        let mut m = self.0.borrow_mut();
        if m.no_memory {
            return None;
        }
        let len = bytes.div_ceil(4096) * 4096;
        let phys = MEMORY_BASE + m.memory.len() as u64;
        let new_len = m.memory.len() + len;
        m.memory.resize(new_len, 0);
        Some(ModelMemory {
            model: self.0.clone(),
            phys,
            len,
        })
    }

    fn deadline(&self, ms: u64) -> u64 {
        self.0.borrow().now_ms + ms
    }

    fn expired(&self, deadline: &u64) -> bool {
        let mut m = self.0.borrow_mut();
        m.now_ms += 1;
        m.now_ms >= *deadline
    }
}

impl DmaMemory for ModelMemory {
    fn phys(&self) -> u64 {
        self.phys
    }

    fn size(&self) -> usize {
        self.len
    }

    fn write_at(&mut self, at: usize, data: &[u8]) {
        assert!(at + data.len() <= self.len);
        self.model
            .borrow_mut()
            .mem_mut(self.phys + at as u64, data.len())
            .copy_from_slice(data);
    }

    fn leak(&mut self) {
        self.model.borrow_mut().leaked += self.len;
    }

    fn read_at(&self, at: usize, out: &mut [u8]) {
        assert!(at + out.len() <= self.len);
        out.copy_from_slice(self.model.borrow().mem(self.phys + at as u64, out.len()));
    }
}
