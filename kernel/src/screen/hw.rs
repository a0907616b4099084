//! The status screen's displays on the machine: the VGA text buffer and a linear framebuffer,
//! and the kernel's hook ([`StatusScreen::refresh`]) that redraws when what is shown changes.
//!
//! Which display: the framebuffer GRUB reports (Multiboot2 tag 8: RGB pixels, or EGA text at
//! 0xB8000); on a BIOS Multiboot2 boot without the tag, VGA text at 0xB8000 (GRUB leaves the
//! machine in text mode). PVH boots (QEMU `-kernel`, cloud-hypervisor, Firecracker) get no
//! status screen: their loaders say nothing about a display and those machines have none.

use alloc::string::{String, ToString};
use core::fmt::Write as _;

use super::pixels::{self, Channel, Layout};
use super::{Cell, Display, Network, Screen, Status};
use crate::boot::{BootInfo, BootPath, FramebufferKind};
use crate::mgmt::NetPlane;
use crate::settings::Settings;
use crate::vms::VmManager;

/// The legacy VGA text buffer.
const VGA_TEXT: u64 = 0xb8000;
/// Largest text mode accepted from a loader (VESA's 132×60).
const MAX_TEXT: (u32, u32) = (132, 60);

/// The VGA text buffer: two bytes per cell, character then attribute.
pub struct VgaText {
    base: *mut u16,
    cols: usize,
    rows: usize,
}

impl VgaText {
    fn new(address: u64, cols: usize, rows: usize) -> VgaText {
        let base = crate::mm::map_mmio(address, (cols * rows * 2) as u64) as *mut u16;
        hide_vga_cursor();
        VgaText { base, cols, rows }
    }
}

/// Turns the blinking hardware cursor off (CRTC cursor-start register, bit 5), so it does not
/// sit in the middle of the screen where GRUB left it.
fn hide_vga_cursor() {
    use crate::arch::cpu::port;
    // SAFETY: the VGA CRTC index/data ports; only the cursor-start register is written. On a
    // machine without VGA the ports are unclaimed and the writes go nowhere.
    unsafe {
        port::outb(0x3d4, 0x0a);
        port::outb(0x3d5, 0x20);
    }
}

impl Display for VgaText {
    fn size(&self) -> (usize, usize) {
        (self.cols, self.rows)
    }

    fn draw(&mut self, col: usize, row: usize, cell: Cell) {
        if col >= self.cols || row >= self.rows {
            return;
        }
        // SAFETY: inside the cols×rows buffer mapped in `new`; volatile because it is
        // device memory the VGA scans out.
        unsafe {
            self.base
                .add(row * self.cols + col)
                .write_volatile(super::vga_word(cell))
        };
    }
}

/// A linear RGB framebuffer.
pub struct Framebuffer {
    base: *mut u8,
    layout: Layout,
}

impl Display for Framebuffer {
    fn size(&self) -> (usize, usize) {
        self.layout.grid()
    }

    fn draw(&mut self, col: usize, row: usize, cell: Cell) {
        // SAFETY: `base` maps `layout.len()` bytes of the framebuffer (`open`), which only
        // this screen writes; `draw_cell` stays inside the slice.
        let fb = unsafe { core::slice::from_raw_parts_mut(self.base, self.layout.len()) };
        pixels::draw_cell(fb, &self.layout, col, row, cell);
    }
}

/// Either display.
pub enum AnyDisplay {
    /// VGA text.
    Text(VgaText),
    /// A framebuffer.
    Pixels(Framebuffer),
}

impl Display for AnyDisplay {
    fn size(&self) -> (usize, usize) {
        match self {
            AnyDisplay::Text(d) => d.size(),
            AnyDisplay::Pixels(d) => d.size(),
        }
    }

    fn draw(&mut self, col: usize, row: usize, cell: Cell) {
        match self {
            AnyDisplay::Text(d) => d.draw(col, row, cell),
            AnyDisplay::Pixels(d) => d.draw(col, row, cell),
        }
    }
}

/// What the screen showed last, compared each pass of the main loop before any formatting.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Inputs {
    revision: u64,
    address: Option<smoltcp::wire::Ipv4Cidr>,
    dhcp: bool,
    lease_events: u32,
    vms_running: usize,
    console_base: u16,
}

/// The status screen on this machine's display.
pub struct StatusScreen {
    screen: Screen<AnyDisplay>,
    shown: Option<Inputs>,
}

impl StatusScreen {
    /// Opens the display the boot information names; `Ok(None)` when the machine has none
    /// Keel can draw on (PVH, a UEFI boot without a framebuffer), `Err` with the reason when
    /// the loader's framebuffer is unusable.
    pub fn open(boot: &BootInfo) -> Result<Option<(StatusScreen, String)>, pixels::LayoutError> {
        let (display, what) = match (boot.framebuffer, boot.path) {
            (Some(fb), _) => match fb.kind {
                FramebufferKind::EgaText => {
                    let cols = fb.width.clamp(1, MAX_TEXT.0);
                    let rows = fb.height.clamp(1, MAX_TEXT.1);
                    let display = VgaText::new(fb.address, cols as usize, rows as usize);
                    (
                        AnyDisplay::Text(display),
                        alloc::format!("VGA text {cols}x{rows}"),
                    )
                }
                FramebufferKind::Rgb { red, green, blue } => {
                    let channel = |(position, size)| Channel { position, size };
                    let layout = Layout {
                        pitch: fb.pitch as usize,
                        width: fb.width as usize,
                        height: fb.height as usize,
                        bpp: fb.bpp,
                        red: channel(red),
                        green: channel(green),
                        blue: channel(blue),
                    };
                    layout.validate()?;
                    let base = crate::mm::map_mmio(fb.address, layout.len() as u64) as *mut u8;
                    let (cols, rows) = layout.grid();
                    let what = alloc::format!(
                        "framebuffer {}x{}x{} at {:#x}, {cols}x{rows} text",
                        fb.width,
                        fb.height,
                        fb.bpp,
                        fb.address
                    );
                    (AnyDisplay::Pixels(Framebuffer { base, layout }), what)
                }
                FramebufferKind::Indexed => {
                    return Err(pixels::LayoutError::UnsupportedDepth(fb.bpp));
                }
            },
            (None, BootPath::Multiboot2Bios) => (
                AnyDisplay::Text(VgaText::new(VGA_TEXT, 80, 25)),
                "VGA text 80x25".to_string(),
            ),
            (None, _) => return Ok(None),
        };
        Ok(Some((
            StatusScreen {
                screen: Screen::new(display),
                shown: None,
            },
            what,
        )))
    }

    /// Redraws what changed since the last call: the hostname (a configuration revision),
    /// the address (a lease event), the VM count, the console port. Comparing these costs a
    /// few loads; the screen is formatted and drawn only when one moved.
    pub fn refresh(&mut self, settings: &Settings, net: Option<&NetPlane>, vms: &VmManager) {
        let console = crate::serial::console_port();
        let inputs = Inputs {
            revision: settings.revision(),
            address: net.and_then(|n| n.status().address),
            dhcp: net.is_some_and(|n| n.status().dhcp),
            lease_events: net.map_or(0, |n| n.status().lease_events),
            vms_running: vms.running_count(),
            console_base: console.base,
        };
        if self.shown == Some(inputs) {
            return;
        }
        self.shown = Some(inputs);
        let network = match (net, inputs.address) {
            (Some(_), Some(cidr)) => Network::Address {
                cidr: cidr.to_string(),
                ip: cidr.address().to_string(),
                dhcp: inputs.dhcp,
            },
            (Some(_), None) => Network::WaitingForDhcp,
            (None, _) => Network::Down(String::from("no usable NIC (see the serial console)")),
        };
        let mut console_text = String::new();
        let _ = write!(console_text, "{console}");
        let config = settings.current();
        let status = Status {
            hostname: config.hostname.clone(),
            version: env!("CARGO_PKG_VERSION"),
            network,
            http_port: net.map_or(config.management.http_port, NetPlane::port),
            https: net.and_then(|n| match n.https() {
                crate::mgmt::HttpsState::On { port, .. } => {
                    Some((*port, crate::tls_setup::fingerprint().unwrap_or_default()))
                }
                crate::mgmt::HttpsState::Off { .. } => None,
            }),
            vms_running: inputs.vms_running,
            console: console_text,
        };
        self.screen.show(&status);
    }
}
