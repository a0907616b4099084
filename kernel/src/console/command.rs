//! Console commands: the table (for `help`) and parsing a line into a [`Command`].

/// A parsed console command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// List the commands.
    Help,
    /// Show the Keel version and build.
    Version,
    /// Show memory and heap use.
    Mem,
    /// Show the CPUs the firmware lists.
    Cpus,
    /// Reset the machine.
    Reboot,
    /// Power the machine off.
    Poweroff,
}

/// Name, command and one-line description, in `help` order.
pub const COMMANDS: &[(&str, Command, &str)] = &[
    ("help", Command::Help, "list the commands"),
    (
        "version",
        Command::Version,
        "show the Keel version and build",
    ),
    (
        "mem",
        Command::Mem,
        "show total, used and free memory and the kernel heap",
    ),
    (
        "cpus",
        Command::Cpus,
        "show the CPUs the firmware lists (ACPI MADT)",
    ),
    ("reboot", Command::Reboot, "reset the machine"),
    (
        "poweroff",
        Command::Poweroff,
        "power the machine off (ACPI S5)",
    ),
];

/// Why a line is not a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError<'a> {
    /// The first word names no command.
    Unknown(&'a str),
    /// The command takes no arguments but got some.
    UnexpectedArgument {
        /// The command.
        command: &'static str,
        /// The first extra word.
        argument: &'a str,
    },
}

impl core::fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ParseError::Unknown(name) => {
                write!(
                    f,
                    "unknown command '{name}': type 'help' for the list of commands"
                )
            }
            ParseError::UnexpectedArgument { command, argument } => {
                write!(
                    f,
                    "'{command}' takes no arguments (got '{argument}'); type 'help'"
                )
            }
        }
    }
}

/// Parses a line; `Ok(None)` for a blank line.
pub fn parse(line: &str) -> Result<Option<Command>, ParseError<'_>> {
    let mut words = line.split_ascii_whitespace();
    let Some(name) = words.next() else {
        return Ok(None);
    };
    let &(command_name, command, _) = COMMANDS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or(ParseError::Unknown(name))?;
    if let Some(argument) = words.next() {
        return Err(ParseError::UnexpectedArgument {
            command: command_name,
            argument,
        });
    }
    Ok(Some(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_command_parses() {
        for (name, command, _) in COMMANDS {
            assert_eq!(parse(name), Ok(Some(*command)));
            assert_eq!(parse(&std::format!("  {name}  ")), Ok(Some(*command)));
        }
    }

    #[test]
    fn blank_unknown_and_extra_words() {
        assert_eq!(parse("   "), Ok(None));
        let err = parse("foo bar").unwrap_err();
        assert_eq!(
            std::format!("{err}"),
            "unknown command 'foo': type 'help' for the list of commands"
        );
        assert_eq!(
            parse("mem now"),
            Err(ParseError::UnexpectedArgument {
                command: "mem",
                argument: "now"
            })
        );
    }
}
