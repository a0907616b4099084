//! Compiling `keel-kernel` for `x86_64-unknown-none` with cargo.
//!
//! The kernel gets its own target directory (`target/kernel`) so that `keel build` can run from
//! inside `cargo test` or `cargo run` without waiting on the outer cargo's build-directory lock.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The kernel's package name.
pub const KERNEL_PACKAGE: &str = "keel-kernel";
/// The kernel's target triple.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// Cargo profile to build the kernel with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profile {
    /// `--release` (the default; `[profile.release]` keeps line-table debug info).
    #[default]
    Release,
    /// The dev profile (`keel build --debug`).
    Debug,
}

impl Profile {
    /// The directory cargo puts this profile's artifacts in.
    pub fn dir_name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// Why compiling the kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelBuildError {
    /// cargo could not be started.
    #[error("cannot run {cargo}: {source}")]
    SpawnCargo {
        /// The cargo program used.
        cargo: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// cargo reported an error; its output was shown (or is included when quiet).
    #[error("compiling the kernel failed ({status}); the command was: {command}{output}")]
    CompileFailed {
        /// The command line, to rerun by hand.
        command: String,
        /// cargo's exit status.
        status: std::process::ExitStatus,
        /// cargo's output, when it was captured (quiet builds), prefixed with a newline.
        output: String,
    },
    /// cargo succeeded but the ELF is not where expected.
    #[error("cargo reported success but {path} does not exist")]
    MissingElf {
        /// The expected path.
        path: PathBuf,
    },
}

/// `<root>/target/kernel`.
pub fn kernel_target_dir(root: &Path) -> PathBuf {
    root.join("target").join("kernel")
}

/// Where cargo leaves the kernel ELF for `profile`.
pub fn kernel_elf_path(root: &Path, profile: Profile) -> PathBuf {
    kernel_target_dir(root)
        .join(KERNEL_TARGET)
        .join(profile.dir_name())
        .join(KERNEL_PACKAGE)
}

/// The cargo to run: the one running us (`$CARGO`) when there is one, else `cargo` on `PATH`.
fn cargo_program() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// The cargo arguments that build the kernel.
pub fn cargo_args(root: &Path, profile: Profile) -> Vec<String> {
    let mut args = vec!["build".to_string()];
    if profile == Profile::Release {
        args.push("--release".into());
    }
    args.extend([
        "-p".into(),
        KERNEL_PACKAGE.into(),
        "--target".into(),
        KERNEL_TARGET.into(),
        "--target-dir".into(),
        kernel_target_dir(root).display().to_string(),
    ]);
    args
}

/// Builds the kernel in workspace `root` and returns the ELF's path. Cargo's progress goes to
/// stderr unless `quiet`; a quiet build that fails includes cargo's output in the error.
pub fn compile_kernel(
    root: &Path,
    profile: Profile,
    quiet: bool,
) -> Result<PathBuf, KernelBuildError> {
    let cargo = cargo_program();
    let args = cargo_args(root, profile);
    let mut command = Command::new(&cargo);
    command
        .args(&args)
        .current_dir(root)
        // Variables an outer `cargo test`/`cargo run` may set that would redirect or reshape
        // this build; the kernel's flags come from the workspace's own configuration.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .stdin(Stdio::null());
    let spawn_err = |source| KernelBuildError::SpawnCargo {
        cargo: cargo.clone(),
        source,
    };
    let (status, output) = if quiet {
        let out = command.output().map_err(spawn_err)?;
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        (out.status, text)
    } else {
        (command.status().map_err(spawn_err)?, String::new())
    };
    if !status.success() {
        let output = if output.trim().is_empty() {
            String::new()
        } else {
            format!("\n{}", output.trim_end())
        };
        return Err(KernelBuildError::CompileFailed {
            command: format!("cargo {}", args.join(" ")),
            status,
            output,
        });
    }
    let elf = kernel_elf_path(root, profile);
    if !elf.is_file() {
        return Err(KernelBuildError::MissingElf { path: elf });
    }
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_command_line() {
        let args = cargo_args(Path::new("/ws"), Profile::Release);
        assert_eq!(
            args.join(" "),
            "build --release -p keel-kernel --target x86_64-unknown-none --target-dir /ws/target/kernel"
        );
        assert_eq!(
            kernel_elf_path(Path::new("/ws"), Profile::Release),
            Path::new("/ws/target/kernel/x86_64-unknown-none/release/keel-kernel")
        );
    }

    #[test]
    fn debug_command_line() {
        let args = cargo_args(Path::new("/ws"), Profile::Debug);
        assert!(!args.contains(&"--release".to_string()));
        assert_eq!(
            kernel_elf_path(Path::new("/ws"), Profile::Debug),
            Path::new("/ws/target/kernel/x86_64-unknown-none/debug/keel-kernel")
        );
    }

    #[test]
    fn failure_in_a_non_workspace_dir_is_reported_with_the_command() {
        let tmp = tempfile::tempdir().unwrap();
        let err = compile_kernel(tmp.path(), Profile::Release, true).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("compiling the kernel failed"), "{msg}");
        assert!(
            msg.contains("cargo build --release -p keel-kernel"),
            "{msg}"
        );
        assert!(msg.contains("could not find `Cargo.toml`"), "{msg}");
    }
}
