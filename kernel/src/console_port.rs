//! Which UART is the operator console: `console=` on the kernel command line, else the ACPI
//! SPCR table's port, else COM1 at 115200.
//!
//! Pure: the command-line grammar and the choice are host-tested; `serial` programs the port.
//! Accepted values: `ttyS0`..`ttyS3` (COM1 0x3F8, COM2 0x2F8, COM3 0x3E8, COM4 0x2E8) and
//! `uart,io,0x<port>`, each optionally followed by `,<baud>` from [`STANDARD_BAUDS`].

use core::fmt;

/// I/O bases of COM1..COM4, the ports `ttyS0`..`ttyS3` name.
pub const COM_BASES: [u16; 4] = [0x3f8, 0x2f8, 0x3e8, 0x2e8];

/// Baud rates a 16550 reaches exactly from its 1.8432 MHz clock (divisor = 115200 / baud).
pub const STANDARD_BAUDS: [u32; 8] = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200];

/// The console's speed when nothing names one.
pub const DEFAULT_BAUD: u32 = 115_200;

/// Where the console's port came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortSource {
    /// `console=` on the kernel command line.
    CommandLine,
    /// The firmware's ACPI SPCR table.
    Spcr,
    /// Nothing named one: COM1.
    Default,
}

impl fmt::Display for PortSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortSource::CommandLine => "kernel command line",
            PortSource::Spcr => "ACPI SPCR",
            PortSource::Default => "default",
        })
    }
}

/// A 16550 on I/O ports and its speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsolePort {
    /// I/O base.
    pub base: u16,
    /// Baud rate (one of [`STANDARD_BAUDS`]).
    pub baud: u32,
    /// The ISA IRQ its receive interrupt arrives on; `None`: polled from the timer tick.
    pub irq: Option<u8>,
}

impl ConsolePort {
    /// COM1 at 115200, IRQ 4.
    pub const COM1: ConsolePort = ConsolePort::io(0x3f8, DEFAULT_BAUD);

    /// A port at `base`; the IRQ is the PC's for the four COM bases (COM1/COM3 IRQ 4,
    /// COM2/COM4 IRQ 3), none (polled) for any other base.
    pub const fn io(base: u16, baud: u32) -> ConsolePort {
        let irq = match base {
            0x3f8 | 0x3e8 => Some(4),
            0x2f8 | 0x2e8 => Some(3),
            _ => None,
        };
        ConsolePort { base, baud, irq }
    }

    /// The Linux name (`ttyS1`) for a COM base, else `None`.
    pub fn tty_name(&self) -> Option<&'static str> {
        const NAMES: [&str; 4] = ["ttyS0", "ttyS1", "ttyS2", "ttyS3"];
        COM_BASES
            .iter()
            .position(|&b| b == self.base)
            .map(|i| NAMES[i])
    }

    /// The 16550 divisor latch value for the baud rate.
    pub fn divisor(&self) -> u16 {
        (115_200 / self.baud.clamp(1, 115_200)) as u16
    }
}

/// `ttyS1 (0x2f8) 115200`, or `uart 0x2000 115200` for a port that is no COM base.
impl fmt::Display for ConsolePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tty_name() {
            Some(name) => write!(f, "{name} ({:#x}) {}", self.base, self.baud),
            None => write!(f, "uart {:#x} {}", self.base, self.baud),
        }
    }
}

/// Why a `console=` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleArgError {
    /// Neither `ttyS<n>` nor `uart,io,<port>`.
    #[error("console={0}: expected ttyS0..ttyS3 or uart,io,0x<port>, each optionally with ,<baud>")]
    UnknownDevice(heapless::String<64>),
    /// `ttyS4` and up have no standard port.
    #[error("console=ttyS{0}: only ttyS0..ttyS3 (COM1..COM4) have standard ports")]
    NoSuchCom(u8),
    /// `uart,io,` followed by something that is not a 16-bit hexadecimal port.
    #[error("console=uart,io,{0}: the port must be hexadecimal 0x1..0xffff")]
    BadPort(heapless::String<32>),
    /// `uart,mmio,…` and the like: only I/O-port UARTs are driven.
    #[error("console=uart,{0},…: only I/O-port UARTs (uart,io,0x<port>) are supported")]
    NotIoPort(heapless::String<16>),
    /// A speed outside the standard set.
    #[error("console=…,{0}: baud must be one of 1200 2400 4800 9600 19200 38400 57600 115200")]
    BadBaud(heapless::String<32>),
}

fn short<const N: usize>(text: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    for ch in text.chars() {
        if out.push(ch).is_err() {
            break;
        }
    }
    out
}

fn parse_baud(text: Option<&str>) -> Result<u32, ConsoleArgError> {
    let Some(text) = text else {
        return Ok(DEFAULT_BAUD);
    };
    // Linux allows parity/bits after the speed (`115200n8`); the 8N1 Keel programs is the
    // only framing it accepts.
    let digits = text
        .strip_suffix("n8")
        .or_else(|| text.strip_suffix("N8"))
        .unwrap_or(text);
    match digits.parse::<u32>() {
        Ok(baud) if STANDARD_BAUDS.contains(&baud) => Ok(baud),
        _ => Err(ConsoleArgError::BadBaud(short(text))),
    }
}

/// Parses the value of `console=` (without the key).
pub fn parse_console_arg(value: &str) -> Result<ConsolePort, ConsoleArgError> {
    if let Some(rest) = value.strip_prefix("ttyS") {
        let (number, baud) = match rest.split_once(',') {
            Some((n, b)) => (n, Some(b)),
            None => (rest, None),
        };
        let index: u8 = number
            .parse()
            .map_err(|_| ConsoleArgError::UnknownDevice(short(value)))?;
        let base = *COM_BASES
            .get(usize::from(index))
            .ok_or(ConsoleArgError::NoSuchCom(index))?;
        return Ok(ConsolePort::io(base, parse_baud(baud)?));
    }
    if let Some(rest) = value
        .strip_prefix("uart,")
        .or_else(|| value.strip_prefix("uart8250,"))
    {
        let mut parts = rest.splitn(3, ',');
        let space = parts.next().unwrap_or("");
        if space != "io" {
            return Err(ConsoleArgError::NotIoPort(short(space)));
        }
        let port_text = parts.next().unwrap_or("");
        let base = port_text
            .strip_prefix("0x")
            .or_else(|| port_text.strip_prefix("0X"))
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            .filter(|&p| p != 0 && p <= 0xfff8)
            .ok_or_else(|| ConsoleArgError::BadPort(short(port_text)))?;
        return Ok(ConsolePort::io(base, parse_baud(parts.next())?));
    }
    Err(ConsoleArgError::UnknownDevice(short(value)))
}

/// The console port and why it was chosen, plus a warning when `console=` was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleChoice {
    /// The port to use.
    pub port: ConsolePort,
    /// Where it came from.
    pub source: PortSource,
    /// A refused `console=` value (the choice then falls back to SPCR or COM1).
    pub warning: Option<ConsoleArgError>,
}

/// Picks the console: the last `console=` value Keel understands (Linux semantics: the last
/// one is the console; `console=tty0` and the like, meaning a screen, are skipped), else the
/// SPCR's port, else COM1.
pub fn choose<'a>(
    console_args: impl Iterator<Item = &'a str>,
    spcr: Option<ConsolePort>,
) -> ConsoleChoice {
    let mut chosen = None;
    let mut warning = None;
    for value in console_args {
        // A screen console (`tty0`, `tty1`) is Linux's; Keel's screen is its status screen.
        if value.starts_with("tty") && !value.starts_with("ttyS") {
            continue;
        }
        match parse_console_arg(value) {
            Ok(port) => {
                chosen = Some(port);
                warning = None;
            }
            Err(e) => warning = Some(e),
        }
    }
    let (port, source) = match (chosen, spcr) {
        (Some(port), _) => (port, PortSource::CommandLine),
        (None, Some(port)) => (port, PortSource::Spcr),
        (None, None) => (ConsolePort::COM1, PortSource::Default),
    };
    ConsoleChoice {
        port,
        source,
        warning,
    }
}

/// Every `console=` value on a command line, in order.
pub fn console_args(cmdline: &str) -> impl Iterator<Item = &str> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|arg| arg.strip_prefix("console="))
}

/// Where the defmt log goes: COM2, unless the console took COM2 — then COM1.
pub fn log_port(console: &ConsolePort) -> u16 {
    if console.base == COM_BASES[1] {
        COM_BASES[0]
    } else {
        COM_BASES[1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_names_pick_the_com_bases_and_their_irqs() {
        let p = parse_console_arg("ttyS1,115200").unwrap();
        assert_eq!((p.base, p.baud, p.irq), (0x2f8, 115200, Some(3)));
        let p = parse_console_arg("ttyS0").unwrap();
        assert_eq!((p.base, p.baud, p.irq), (0x3f8, 115200, Some(4)));
        let p = parse_console_arg("ttyS2,9600").unwrap();
        assert_eq!(
            (p.base, p.baud, p.irq, p.divisor()),
            (0x3e8, 9600, Some(4), 12)
        );
        let p = parse_console_arg("ttyS3,57600n8").unwrap();
        assert_eq!((p.base, p.baud, p.irq), (0x2e8, 57600, Some(3)));
        assert_eq!(p.to_string(), "ttyS3 (0x2e8) 57600");
    }

    #[test]
    fn uart_io_takes_any_port_polled() {
        let p = parse_console_arg("uart,io,0x2f8,38400").unwrap();
        assert_eq!((p.base, p.baud, p.irq), (0x2f8, 38400, Some(3)));
        let p = parse_console_arg("uart,io,0x3000").unwrap();
        assert_eq!((p.base, p.baud, p.irq), (0x3000, 115200, None));
        assert_eq!(p.to_string(), "uart 0x3000 115200");
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        assert_eq!(
            parse_console_arg("ttyS4"),
            Err(ConsoleArgError::NoSuchCom(4))
        );
        assert!(matches!(
            parse_console_arg("ttyS1,115201"),
            Err(ConsoleArgError::BadBaud(_))
        ));
        assert!(matches!(
            parse_console_arg("ttyS1,fast"),
            Err(ConsoleArgError::BadBaud(_))
        ));
        assert!(matches!(
            parse_console_arg("uart,mmio,0xfe000000"),
            Err(ConsoleArgError::NotIoPort(_))
        ));
        assert!(matches!(
            parse_console_arg("uart,io,2f8"),
            Err(ConsoleArgError::BadPort(_))
        ));
        assert!(matches!(
            parse_console_arg("uart,io,0x0"),
            Err(ConsoleArgError::BadPort(_))
        ));
        assert!(matches!(
            parse_console_arg("lp0"),
            Err(ConsoleArgError::UnknownDevice(_))
        ));
        let message = parse_console_arg("ttyS1,7").unwrap_err().to_string();
        assert!(message.contains("115200"), "{message}");
    }

    #[test]
    fn the_command_line_wins_over_spcr_which_wins_over_com1() {
        let spcr = Some(ConsolePort::io(0x2f8, 9600));
        let c = choose(console_args("quiet console=ttyS2"), spcr);
        assert_eq!((c.port.base, c.source), (0x3e8, PortSource::CommandLine));
        let c = choose(console_args("quiet"), spcr);
        assert_eq!(
            (c.port.base, c.port.baud, c.source),
            (0x2f8, 9600, PortSource::Spcr)
        );
        let c = choose(console_args(""), None);
        assert_eq!((c.port, c.source), (ConsolePort::COM1, PortSource::Default));
    }

    #[test]
    fn the_last_console_counts_and_screens_are_skipped() {
        let c = choose(
            console_args("console=ttyS0 console=ttyS1 console=tty0"),
            None,
        );
        assert_eq!(c.port.base, 0x2f8);
        assert_eq!(c.warning, None);
    }

    #[test]
    fn a_bad_value_falls_back_with_a_warning() {
        let c = choose(console_args("console=ttyS9"), None);
        assert_eq!(c.source, PortSource::Default);
        assert_eq!(c.warning, Some(ConsoleArgError::NoSuchCom(9)));
    }

    #[test]
    fn the_log_leaves_com2_to_the_console() {
        assert_eq!(log_port(&ConsolePort::io(0x2f8, 115200)), 0x3f8);
        assert_eq!(log_port(&ConsolePort::COM1), 0x2f8);
        assert_eq!(log_port(&ConsolePort::io(0x3e8, 115200)), 0x2f8);
    }
}
