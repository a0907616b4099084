//! `--console` of `keel build` and `keel flash`: the serial port the kernel's operator console
//! (and GRUB's menu) use, as the kernel's `console=` takes it: `ttyS0`..`ttyS3` (COM1..COM4)
//! or `uart,io,0x<port>`, each optionally with `,<baud>` from the 16550's standard set.

/// Speeds a 16550 reaches exactly from its 1.8432 MHz clock.
pub const STANDARD_BAUDS: [u32; 8] = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200];

/// A validated `--console` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleOption {
    /// `ttyS0`..`ttyS3`: the COM index; `None` for an `uart,io` port.
    pub com: Option<u8>,
    /// The I/O port of a `uart,io` value.
    pub io_port: Option<u16>,
    /// The speed.
    pub baud: u32,
    /// The value as given, which goes after `console=`.
    pub value: String,
}

/// Why a `--console` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleOptionError {
    /// Not one of the forms.
    #[error(
        "--console {0}: expected ttyS0..ttyS3 or uart,io,0x<port>, optionally followed by \
         ,<baud> (e.g. ttyS1,115200)"
    )]
    Unknown(String),
    /// `ttyS4` and up.
    #[error("--console {0}: only ttyS0..ttyS3 (COM1..COM4) have standard ports")]
    NoSuchCom(String),
    /// A bad `uart,io` port.
    #[error("--console {0}: the port must be hexadecimal, 0x1..0xfff8 (e.g. uart,io,0x2f8)")]
    BadPort(String),
    /// A non-standard speed.
    #[error("--console {0}: the speed must be one of 1200 2400 4800 9600 19200 38400 57600 115200")]
    BadBaud(String),
}

/// Parses and checks a `--console` value (the kernel accepts exactly these).
pub fn parse_console_option(value: &str) -> Result<ConsoleOption, ConsoleOptionError> {
    if !value.starts_with("ttyS") && !value.starts_with("uart,io,") {
        return Err(ConsoleOptionError::Unknown(value.to_string()));
    }
    let (device, baud) = if let Some(rest) = value.strip_prefix("uart,io,") {
        match rest.split_once(',') {
            Some((port, baud)) => (format!("uart,io,{port}"), Some(baud)),
            None => (value.to_string(), None),
        }
    } else {
        match value.split_once(',') {
            Some((device, baud)) => (device.to_string(), Some(baud)),
            None => (value.to_string(), None),
        }
    };
    let baud = match baud {
        None => 115_200,
        // `115200n8` as Linux writes it: 8N1 is the only framing Keel programs.
        Some(text) => text
            .strip_suffix("n8")
            .unwrap_or(text)
            .parse::<u32>()
            .ok()
            .filter(|b| STANDARD_BAUDS.contains(b))
            .ok_or_else(|| ConsoleOptionError::BadBaud(value.to_string()))?,
    };
    let mut option = ConsoleOption {
        com: None,
        io_port: None,
        baud,
        value: value.to_string(),
    };
    if let Some(number) = device.strip_prefix("ttyS") {
        let index: u8 = number
            .parse()
            .map_err(|_| ConsoleOptionError::Unknown(value.to_string()))?;
        if index > 3 {
            return Err(ConsoleOptionError::NoSuchCom(value.to_string()));
        }
        option.com = Some(index);
    } else if let Some(port) = device.strip_prefix("uart,io,") {
        let port = port
            .strip_prefix("0x")
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            .filter(|&p| p != 0 && p <= 0xfff8)
            .ok_or_else(|| ConsoleOptionError::BadPort(value.to_string()))?;
        option.io_port = Some(port);
    } else {
        return Err(ConsoleOptionError::Unknown(value.to_string()));
    }
    Ok(option)
}

impl ConsoleOption {
    /// The kernel command-line word.
    pub fn cmdline_word(&self) -> String {
        format!("console={}", self.value)
    }

    /// GRUB's `serial` command for the same port, so GRUB's own output goes there too.
    pub fn grub_serial(&self) -> String {
        match (self.com, self.io_port) {
            (Some(unit), _) => format!("serial --unit={unit} --speed={}", self.baud),
            (None, Some(port)) => format!("serial --port={port:#x} --speed={}", self.baud),
            (None, None) => format!("serial --unit=0 --speed={}", self.baud),
        }
    }
}

/// GRUB's `serial` command for a kernel command line: the port of its last valid `console=`
/// word, COM1 at 115200 without one.
pub fn grub_serial_for_cmdline(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .rev()
        .filter_map(|w| w.strip_prefix("console="))
        .find_map(|v| parse_console_option(v).ok())
        .map_or_else(
            || String::from("serial --unit=0 --speed=115200"),
            |c| c.grub_serial(),
        )
}

/// `cmdline` with every `console=` word replaced by `option`'s (added when there is none).
pub fn with_console(cmdline: &str, option: &ConsoleOption) -> String {
    let mut words: Vec<String> = cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("console="))
        .map(str::to_string)
        .collect();
    words.push(option.cmdline_word());
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_values() {
        let c = parse_console_option("ttyS1,115200").unwrap();
        assert_eq!((c.com, c.baud), (Some(1), 115200));
        assert_eq!(c.cmdline_word(), "console=ttyS1,115200");
        assert_eq!(c.grub_serial(), "serial --unit=1 --speed=115200");
        let c = parse_console_option("ttyS0").unwrap();
        assert_eq!((c.com, c.baud), (Some(0), 115200));
        let c = parse_console_option("ttyS3,57600n8").unwrap();
        assert_eq!(c.grub_serial(), "serial --unit=3 --speed=57600");
        let c = parse_console_option("uart,io,0x3000,9600").unwrap();
        assert_eq!((c.io_port, c.baud), (Some(0x3000), 9600));
        assert_eq!(c.grub_serial(), "serial --port=0x3000 --speed=9600");
    }

    #[test]
    fn bad_values_name_the_problem() {
        assert!(matches!(
            parse_console_option("ttyS4"),
            Err(ConsoleOptionError::NoSuchCom(_))
        ));
        assert!(matches!(
            parse_console_option("ttyS1,115201"),
            Err(ConsoleOptionError::BadBaud(_))
        ));
        assert!(matches!(
            parse_console_option("uart,io,3f8"),
            Err(ConsoleOptionError::BadPort(_))
        ));
        assert!(matches!(
            parse_console_option("uart,mmio,0xfe000000"),
            Err(ConsoleOptionError::Unknown(_))
        ));
        assert!(matches!(
            parse_console_option("com2"),
            Err(ConsoleOptionError::Unknown(_))
        ));
        let message = parse_console_option("ttyS1,7").unwrap_err().to_string();
        assert!(message.contains("--console ttyS1,7") && message.contains("115200"));
    }

    #[test]
    fn grub_follows_the_last_console_word() {
        assert_eq!(
            grub_serial_for_cmdline("quiet"),
            "serial --unit=0 --speed=115200"
        );
        assert_eq!(
            grub_serial_for_cmdline("console=ttyS0 console=ttyS3,57600"),
            "serial --unit=3 --speed=57600"
        );
        assert_eq!(
            grub_serial_for_cmdline("console=bogus"),
            "serial --unit=0 --speed=115200"
        );
    }

    #[test]
    fn the_console_word_is_replaced() {
        let c = parse_console_option("ttyS1").unwrap();
        assert_eq!(
            with_console("keel.api-token=x console=ttyS0 quiet", &c),
            "keel.api-token=x quiet console=ttyS1"
        );
        assert_eq!(with_console("", &c), "console=ttyS1");
    }
}
